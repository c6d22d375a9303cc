//go:build linux

package jobvm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// cloudInitTemplate makes a template as `vm create -i IMAGE -C -k KEY`
// and a first boot leave it (nuageinit gave the default user the key,
// rc.d/sshd generated the template's host key), snapshotted as snap; with
// keepFirstboot the guest touches /firstboot before it stops, as the
// default provisioning does. It returns the template's host key.
func cloudInitTemplate(t *testing.T, ctx context.Context, h *fixture.Host, name, snap string, keepFirstboot bool) ssh.PublicKey {
	t.Helper()
	img := filepath.Join(t.TempDir(), "freebsd.img")
	require.NoError(t, sim.WriteImage(img))
	signer, err := h.Signer()
	require.NoError(t, err)
	pub := filepath.Join(t.TempDir(), "key.pub")
	require.NoError(t, os.WriteFile(pub, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644))
	vmOK := func(args ...string) {
		t.Helper()
		r, err := h.VM(ctx, args...)
		require.NoError(t, err)
		require.Equal(t, 0, r.ExitCode, "vm %v: %s", args, r)
	}
	vmOK("create", "-i", img, "-C", "-k", pub, name)
	vmOK("start", name)
	mac, err := h.GuestMAC(name)
	require.NoError(t, err)
	addr, err := h.WaitLease(ctx, mac)
	require.NoError(t, err)

	var key ssh.PublicKey
	cmd := "true"
	if keepFirstboot {
		cmd = "su -m root -c 'touch /firstboot'"
	}
	require.Eventually(t, func() bool {
		conn, err := h.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, 22).String())
		if err != nil {
			return false
		}
		c, ch, reqs, err := ssh.NewClientConn(conn, addr.String(), &ssh.ClientConfig{
			User: h.SSHUser(), Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error { key = k; return nil },
		})
		if err != nil {
			conn.Close()
			return false
		}
		client := ssh.NewClient(c, ch, reqs)
		defer client.Close()
		s, err := client.NewSession()
		if err != nil {
			return false
		}
		defer s.Close()
		return s.Run(cmd) == nil
	}, 30*time.Second, 100*time.Millisecond, "template %s never answered over SSH", name)
	vmOK("stop", name)
	require.Eventually(t, func() bool {
		r, err := h.VM(ctx, "list")
		return err == nil && listedStopped(r.Stdout, name)
	}, 30*time.Second, 50*time.Millisecond)
	vmOK("snapshot", name+"@"+snap)
	return key
}

func listedStopped(list, name string) bool {
	for _, l := range strings.Split(list, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return strings.Contains(l, "Stopped")
		}
	}
	return false
}

// guestHostKey is the host key the guest itself holds, read over the job's
// connection.
func guestHostKey(t *testing.T, vm *jobvm.VM) ssh.PublicKey {
	t.Helper()
	var out strings.Builder
	require.NoError(t, vm.Run(context.Background(), strings.NewReader("cat /etc/ssh/ssh_host_ed25519_key.pub"), &out, &out))
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.String()))
	require.NoError(t, err, out.String())
	return k
}

// Every clone of a cloud-init template presents a fresh host key of its
// own, the one the runner generated and pinned: not the template's, not
// another clone's. The key's files on the host go with the clone.
func TestE2EPerVMHostKeys(t *testing.T) {
	e := newE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmplKey := cloudInitTemplate(t, ctx, e.sim, "fbsd-ci", e.sim.Snapshot(), true)

	m := e.host.Manager(e.s, "fbsd-ci", "")
	var vms []*jobvm.VM
	var logs []*lockedLog
	for i := range 2 {
		log := &lockedLog{}
		start := time.Now()
		vm, err := m.Create(ctx, jobvm.Job{ID: int64(700 + i)}, log.logf)
		require.NoError(t, err, "job log:\n%s", log.String())
		t.Logf("clone %s ready in %s", vm.Name, time.Since(start).Round(time.Millisecond))
		t.Cleanup(func() { _ = vm.Close(context.Background()) })
		vms, logs = append(vms, vm), append(logs, log)
	}
	for i, vm := range vms {
		require.NotNil(t, vm.HostKey, "clone %s has no per-VM key; job log:\n%s", vm.Name, logs[i].String())
		assert.Contains(t, logs[i].String(), "Host key: per-VM ssh-ed25519 "+ssh.FingerprintSHA256(vm.HostKey))
		assert.NotContains(t, logs[i].String(), "PRIVATE")
		assert.NotEqual(t, tmplKey.Marshal(), vm.HostKey.Marshal(), "%s presents the template's key", vm.Name)
		assert.Equal(t, vm.HostKey.Marshal(), guestHostKey(t, vm).Marshal(), "the guest holds the key the runner pinned")

		dir := filepath.Join(e.s.VMDir, vm.Name)
		for _, f := range []string{"meta-data", "user-data"} {
			st, err := os.Stat(filepath.Join(dir, ".cloud-init", f))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s/.cloud-init/%s", vm.Name, f)
		}
		ud, err := os.ReadFile(filepath.Join(dir, ".cloud-init", "user-data"))
		require.NoError(t, err)
		assert.Contains(t, string(ud), "ssh_authorized_keys:", "the template's user-data is kept")
	}
	assert.NotEqual(t, vms[0].HostKey.Marshal(), vms[1].HostKey.Marshal(), "two clones share a key")

	// A later stage in another process (bhyve-executor run) pins the
	// same per-VM key, read from the conf.
	again, err := m.Attach(ctx, vms[0].Name, vms[0].Address.IP)
	require.NoError(t, err)
	assert.Equal(t, vms[0].HostKey.Marshal(), again.HostKey.Marshal())
	require.NoError(t, again.Detach())

	for _, vm := range vms {
		require.NoError(t, vm.Close(context.Background()))
		e.gone(t, vm.Name)
		assert.NoDirExists(t, filepath.Join(e.s.VMDir, vm.Name), "the private key goes with the clone's directory")
	}
	staged, err := filepath.Glob(filepath.Join(os.TempDir(), "bhyve-ci-seed-*"))
	require.NoError(t, err)
	assert.Empty(t, staged, "staging directories left behind")
}

// A clone that presents the template's key instead of its own (here: a
// template whose snapshot lost /firstboot, so nuageinit never runs; an
// impostor holding the template's key looks the same) is refused before
// any script runs: a host key error, a system failure, and the VM is gone.
func TestE2EPerVMHostKeyRefusesTheTemplatesKey(t *testing.T) {
	e := newE2E(t, `host_keys = "per-vm"`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmplKey := cloudInitTemplate(t, ctx, e.sim, "fbsd-stale", e.sim.Snapshot(), false)

	log := &lockedLog{}
	name := jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 710, 0)
	start := time.Now()
	vm, err := e.host.Manager(e.s, "fbsd-stale", "").Create(ctx, jobvm.Job{ID: 710}, log.logf)
	took := time.Since(start)
	require.Error(t, err)
	assert.Nil(t, vm)
	t.Logf("refused after %s: %v\njob log:\n%s", took.Round(time.Millisecond), err, log.String())

	var hk *guestssh.HostKeyError
	require.True(t, errors.As(err, &hk), "want a host key error, got %v", err)
	require.NotNil(t, hk.Got)
	assert.Equal(t, tmplKey.Marshal(), hk.Got.Marshal(), "what answered presented the template's key")
	assert.Equal(t, failure.System, failure.KindOf(err), "a system failure, not a setting to fix")
	assert.Contains(t, err.Error(), "did not apply it at its first boot")
	assert.Contains(t, log.String(), "Host key: per-VM ssh-ed25519 ")
	assert.Less(t, took, 30*time.Second, "refused at once, not at boot_timeout %s", e.s.BootTimeout)
	e.gone(t, name)
}

// The default simulated template was made by hand without cloud-init: it
// stays on its pinned key under "auto", and says so; "per-vm" refuses it.
func TestE2ETemplateWithoutCloudInitKeepsItsPin(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"auto", `Host key: the key pinned for template %[1]s (host_keys = "auto": template %[1]s has no .cloud-init/`},
		{"per-vm", `host_keys = "per-vm", but template %[1]s has no .cloud-init/`},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newE2E(t, fmt.Sprintf("host_keys = %q", tc.mode))
			log := &lockedLog{}
			vm, err := e.manager().Create(context.Background(), jobvm.Job{ID: 720}, log.logf)
			want := fmt.Sprintf(tc.want, e.sim.Template())
			if tc.mode == "per-vm" {
				require.Error(t, err)
				assert.Equal(t, failure.Config, failure.KindOf(err))
				assert.Contains(t, err.Error(), want)
				e.gone(t, jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 720, 0))
				return
			}
			require.NoError(t, err, log.String())
			defer vm.Close(context.Background())
			assert.Nil(t, vm.HostKey)
			assert.Contains(t, log.String(), want)
			assert.True(t, bytes.Equal(e.sim.HostKey().Marshal(), guestHostKey(t, vm).Marshal()), "the clone holds the template's key")
		})
	}
}
