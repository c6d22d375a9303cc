package sim_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// sshAs runs command as user on addr and returns its output and the host
// key the guest presented (accepted whatever it is: the test compares it).
func sshAs(ctx context.Context, h *sim.Host, addr netip.Addr, user, command string) (string, ssh.PublicKey, error) {
	signer, err := h.Signer()
	if err != nil {
		return "", nil, err
	}
	var seen ssh.PublicKey
	cc := &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, Timeout: 10 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error { seen = k; return nil },
	}
	hostPort := netip.AddrPortFrom(addr, 22).String()
	conn, err := h.DialContext(ctx, "tcp", hostPort)
	if err != nil {
		return "", nil, err
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, hostPort, cc)
	if err != nil {
		conn.Close()
		return "", nil, err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		return "", seen, err
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(command)
	return out.String() + errb.String(), seen, err
}

func sshAsWait(t *testing.T, ctx context.Context, h *sim.Host, name string, addr netip.Addr, user, command string) (string, ssh.PublicKey) {
	t.Helper()
	for {
		out, key, err := sshAs(ctx, h, addr, user, command)
		if err == nil {
			return out, key
		}
		if _, ok := err.(*ssh.ExitError); ok || strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("ssh %s@%s %q: %v\n%s\nconsole:\n%s", user, name, command, err, out, readFile(h.GuestLog(name)))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ssh %s@%s never worked: %v\nconsole:\n%s", user, name, err, readFile(h.GuestLog(name)))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func bootAndAddr(t *testing.T, ctx context.Context, h *sim.Host, name string) netip.Addr {
	t.Helper()
	mustVM(t, ctx, h, "start", name)
	waitState(t, ctx, h, name, "Running")
	mac, err := h.GuestMAC(name)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := h.WaitLease(ctx, mac)
	if err != nil {
		t.Fatalf("lease of %s: %v", name, err)
	}
	return addr
}

// TestCreateFromImage follows what `template build` asks of vm-bhyve: vm
// create from a cloud image with a cloud-init key, first boot (nuageinit
// gives the key to the default user, sshd generates host keys), changes
// made as root through su surviving a clean shutdown, snapshot, a clone
// with the same host key, and the ZFS rules on destroy@snap and rollback.
// imageAndKey writes a BASIC-CLOUDINIT stand-in image and the simulated
// host's public key into files, for `vm create -i IMG -C -k PUB`.
func imageAndKey(t *testing.T, h *sim.Host) (img, pub string, signer ssh.Signer) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "freebsd.img")
	if err := sim.WriteImage(img); err != nil {
		t.Fatal(err)
	}
	signer, err := h.Signer()
	if err != nil {
		t.Fatal(err)
	}
	pub = filepath.Join(t.TempDir(), "key.pub")
	if err := os.WriteFile(pub, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	return img, pub, signer
}

func TestCreateFromImage(t *testing.T) {
	h := sim.New(t, sim.Options{})
	ctx := testCtx(t, 3*time.Minute)
	img, pub, signer := imageAndKey(t, h)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"key without -C", []string{"create", "-i", img, "-k", pub, "t1"}, "cloud-init is required for injecting public key. Use -C to enable it."},
		{"missing profile", []string{"create", "-t", "nope", "t1"}, "unable to find template " + h.VMDir() + "/.templates/nope.conf"},
		{"missing image", []string{"create", "-i", "nope.img", "t1"}, "unable to locate img file - 'nope.img'"},
		{"not an image", []string{"create", "-i", pub, "t2"}, "failed to write img file with qemu-img"},
		{"bad name", []string{"create", "-i", img, "-bad"}, "Illegal option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := vm(t, ctx, h, tc.args...)
			if r.ExitCode == 0 || !strings.Contains(r.Stderr+r.Stdout, tc.want) {
				t.Fatalf("want failure with %q, got %s", tc.want, r)
			}
		})
	}

	mustVM(t, ctx, h, "create", "-s", "8G", "-m", "2G", "-c", "2", "-i", img, "-C", "-k", pub, "tmpl-img")
	conf := readFile(h.ConfPath("tmpl-img"))
	for _, want := range []string{`cpu="2"`, `memory="2G"`, `disk1_type="ahci-cd"`, `disk1_name="seed.iso"`, `network0_mac="58:9c:fc:0`} {
		if !strings.Contains(conf, want) {
			t.Errorf("conf lacks %s:\n%s", want, conf)
		}
	}
	ud := readFile(filepath.Join(h.VMDir(), "tmpl-img", ".cloud-init", "user-data"))
	if !strings.Contains(ud, "ssh_authorized_keys:\n  - "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))) {
		t.Errorf("user-data lacks the key:\n%s", ud)
	}

	addr := bootAndAddr(t, ctx, h, "tmpl-img")
	out, key1 := sshAsWait(t, ctx, h, "tmpl-img", addr, h.SSHUser(),
		`su -m root -c 'sh -s' <<'EOF'
pw useradd -n jobber -m -s /bin/bash -c "Job user"
mkdir -p ~jobber/.ssh && cp ~freebsd/.ssh/authorized_keys ~jobber/.ssh/ && chown -R jobber ~jobber/.ssh
mkdir -p /builds/marker && touch /firstboot
id -u; freebsd-version
EOF`)
	if !strings.Contains(out, "0\n14.2-RELEASE") {
		t.Fatalf("su/stand-ins: %q", out)
	}
	mustVM(t, ctx, h, "stop", "tmpl-img")
	waitState(t, ctx, h, "tmpl-img", "Stopped")
	disk := filepath.Join(h.VMDir(), "tmpl-img", "disk0.img")
	for _, p := range []string{"firstboot", "builds/marker", "etc/ssh/ssh_host_ed25519_key", "var/db/bhyve-sim/users"} {
		if !fileExists(filepath.Join(disk, p)) {
			t.Errorf("%s not written back to the disk; console:\n%s", p, readFile(h.GuestLog("tmpl-img")))
		}
	}
	mustVM(t, ctx, h, "snapshot", "tmpl-img@s1")
	mustVM(t, ctx, h, "clone", "tmpl-img@s1", "c1")
	caddr := bootAndAddr(t, ctx, h, "c1")
	out, key2 := sshAsWait(t, ctx, h, "c1", caddr, "jobber", "id -un; test -e /firstboot || echo firstboot-gone")
	if out != "jobber\nfirstboot-gone\n" {
		t.Errorf("clone as jobber: %q", out)
	}
	if !bytes.Equal(key1.Marshal(), key2.Marshal()) {
		t.Errorf("clone's host key %s differs from the template's %s", ssh.FingerprintSHA256(key2), ssh.FingerprintSHA256(key1))
	}

	// ZFS refuses to destroy a snapshot with clones, and vm rollback
	// reports success when zfs refuses (zfs::rollback's exit $? bug).
	mustVM(t, ctx, h, "snapshot", "tmpl-img@s2")
	mustVM(t, ctx, h, "clone", "tmpl-img@s2", "c2")
	if r := vm(t, ctx, h, "destroy", "tmpl-img@s2"); r.ExitCode != 1 || !strings.Contains(r.Stderr, "snapshot has dependent clones") {
		t.Errorf("destroy of a snapshot with a clone: %s", r)
	}
	r := vm(t, ctx, h, "rollback", "-r", "tmpl-img@s1")
	if r.ExitCode != 0 || !strings.Contains(r.Stderr, "clones of previous snapshots exist") {
		t.Errorf("rollback with a clone of a newer snapshot: want exit 0 and zfs's refusal, got %s", r)
	}
	if !fileExists(filepath.Join(h.VMDir(), "tmpl-img", ".zfs", "snapshot", "s2")) {
		t.Error("refused rollback removed s2")
	}
	mustVM(t, ctx, h, "destroy", "-f", "c2")
	mustVM(t, ctx, h, "rollback", "-r", "tmpl-img@s1")
	if fileExists(filepath.Join(h.VMDir(), "tmpl-img", ".zfs", "snapshot", "s2")) {
		t.Error("rollback -r kept the newer snapshot s2")
	}
	mustVM(t, ctx, h, "stop", "c1")
	waitState(t, ctx, h, "c1", "Stopped")
	mustVM(t, ctx, h, "destroy", "-f", "c1")
	mustVM(t, ctx, h, "destroy", "tmpl-img@s1")
	if r := mustVM(t, ctx, h, "img"); !strings.HasPrefix(r.Stdout, "DATASTORE           FILENAME\n") {
		t.Errorf("vm img: %q", r.Stdout)
	}
}
