package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/diskimage"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/tree"
)

// buildRoot gives the guest a root filesystem of its own: a copy-on-write
// overlay of the machine's root (upper layer on a tmpfs that dies with the
// guest) with the VM's disk files (host keys, authorized_keys) laid over
// it, so /builds, the user's home and /etc/ssh are per guest and nothing a
// job writes reaches the machine.
func (g *guestInit) buildRoot() error {
	gd := g.p.GuestDir
	// Nothing mounted below may propagate back to the machine.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", gd, "tmpfs", 0, "mode=0755,size=4g"); err != nil {
		return fmt.Errorf("mount guest tmpfs: %w", err)
	}
	upper, work, m := filepath.Join(gd, "upper"), filepath.Join(gd, "work"), filepath.Join(gd, "root")
	for _, d := range []string{upper, work, m} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("overlay", m, "overlay", 0,
		"lowerdir=/,upperdir="+upper+",workdir="+work); err != nil {
		return fmt.Errorf("mount root overlay: %w", err)
	}

	u, err := lookupUser(filepath.Join(m, "etc/passwd"), g.p.SSHUser)
	if err != nil {
		return err
	}
	// Start the user's home and /builds empty whatever the machine has
	// there (removing a lower directory leaves an opaque one in the overlay).
	for _, d := range []string{"/builds", u.home} {
		if err := os.RemoveAll(filepath.Join(m, d)); err != nil {
			return fmt.Errorf("reset %s: %w", d, err)
		}
	}
	if st, err := os.Stat(g.p.DiskDir); g.p.DiskDir != "" && err == nil && st.IsDir() {
		if err := tree.Copy(g.p.DiskDir, m, nil); err != nil {
			return fmt.Errorf("lay VM disk over root: %w", err)
		}
	}
	image := g.p.DiskDir != "" && diskimage.IsImageDisk(g.p.DiskDir)
	if !image {
		// The article's hand-made template has it; a FreeBSD cloud image
		// has /builds only once provisioning made it (and it is on the disk).
		if err := mkdirSticky(filepath.Join(m, "builds")); err != nil {
			return err
		}
	}
	home := filepath.Join(m, u.home)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	if err := chownTree(home, u.uid, u.gid); err != nil {
		return err
	}
	if ssh := filepath.Join(home, ".ssh"); exists(ssh) {
		_ = os.Chmod(ssh, 0o700)
		_ = os.Chmod(filepath.Join(ssh, "authorized_keys"), 0o600)
	}
	if err := unlockShadow(filepath.Join(m, "etc/shadow"), g.p.SSHUser); err != nil {
		return err
	}
	var keys []string
	if g.p.DiskDir != "" {
		keys, _ = filepath.Glob(filepath.Join(g.p.DiskDir, "etc/ssh/ssh_host_*_key"))
		for i, k := range keys {
			keys[i] = strings.TrimPrefix(k, g.p.DiskDir+"/")
		}
	}
	if image {
		if keys, err = g.imageBoot(m, u); err != nil {
			return err
		}
		// Kept open across pivot_root, so that shutdown can write the
		// guest's changes back to its disk (persist).
		if g.upperFD, err = os.Open(upper); err != nil {
			return err
		}
		if g.diskFD, err = os.Open(g.p.DiskDir); err != nil {
			return err
		}
	}
	if err := g.writeConfigs(m, keys, image); err != nil {
		return err
	}

	type mnt struct{ src, dst, fstype, opts string }
	for _, x := range []mnt{
		{"proc", "proc", "proc", ""},
		{"sysfs", "sys", "sysfs", ""},
		{"tmpfs", "dev", "tmpfs", "mode=0755"},
		{"tmpfs", "run", "tmpfs", "mode=0755"},
		{"tmpfs", "tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "var/tmp", "tmpfs", "mode=1777"},
	} {
		dst := filepath.Join(m, x.dst)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(x.src, dst, x.fstype, unix.MS_NOSUID, x.opts); err != nil {
			return fmt.Errorf("mount %s: %w", x.dst, err)
		}
	}
	if err := populateDev(filepath.Join(m, "dev")); err != nil {
		return err
	}
	for _, d := range []string{"run/sshd", "run/bhyve-sim"} {
		if err := os.MkdirAll(filepath.Join(m, d), 0o755); err != nil {
			return err
		}
	}
	if g.p.RecordDir != "" {
		dst := filepath.Join(m, recordMount)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(g.p.RecordDir, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount session record directory: %w", err)
		}
	}

	old := filepath.Join(m, ".oldroot")
	if err := os.MkdirAll(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(m, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.oldroot", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return os.Remove("/.oldroot")
}

// populateDev makes a minimal /dev: the usual character devices bound from
// the machine and a devpts instance of the guest's own for sshd's PTYs.
func populateDev(dev string) error {
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := filepath.Join(dev, n)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount("/dev/"+n, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC,
		"newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return fmt.Errorf("mount devpts: %w", err)
	}
	shm := filepath.Join(dev, "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	for link, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, link)); err != nil {
			return err
		}
	}
	return nil
}

// writeConfigs writes the guest's sshd configuration, the udhcpc event
// script and /etc/hostname.
func (g *guestInit) writeConfigs(m string, keys []string, image bool) error {
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "# sshd of simulated guest %s (bhyve-sim)\n", g.p.Name)
	b.WriteString("Port 22\nAddressFamily inet\nListenAddress 0.0.0.0\n")
	// Only the keys that came with the VM's disk: the machine's own host
	// keys are visible through the overlay but are not the guest's.
	for _, k := range keys {
		fmt.Fprintf(&b, "HostKey /%s\n", k)
	}
	fmt.Fprintf(&b, `PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers %s
%sStrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
MaxSessions 64
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
`, g.allowUsers(m), g.sessionPath(image))
	if g.p.RecordDir != "" {
		if err := os.MkdirAll(filepath.Join(m, filepath.Dir(recordWrapper)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(m, recordWrapper), []byte(recordScript), 0o755); err != nil {
			return err
		}
		fmt.Fprintf(&b, "ForceCommand %s\n", recordWrapper)
	}
	if err := os.MkdirAll(filepath.Join(m, "etc/ssh"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(m, sshdConf), []byte(b.String()), 0o644); err != nil {
		return err
	}

	ip := g.p.Tools.IP
	script := fmt.Sprintf(`#!/bin/sh
# udhcpc event script of a bhyve-sim guest. It installs the address only:
# the simulated network has no route beyond the host's bridge.
IP=%s
LEASE=%s
case "$1" in
deconfig)
	$IP -4 addr flush dev "$interface"
	$IP link set dev "$interface" up
	;;
bound|renew)
	if [ "$(cat "$LEASE" 2>/dev/null)" != "$ip" ]; then
		$IP -4 addr flush dev "$interface"
		$IP -4 addr add "$ip/$mask" dev "$interface"
	fi
	echo "$ip" > "$LEASE.tmp" && mv "$LEASE.tmp" "$LEASE"
	;;
esac
exit 0
`, ip, leaseFile)
	if err := os.MkdirAll(filepath.Join(m, filepath.Dir(dhcpHook)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(m, dhcpHook), []byte(script), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(m, "etc/hostname"), []byte(g.p.Name+"\n"), 0o644)
}

type user struct {
	uid, gid int
	home     string
}

func lookupUser(passwd, name string) (user, error) {
	f, err := os.Open(passwd)
	if err != nil {
		return user{}, fmt.Errorf("read passwd: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fl := strings.Split(s.Text(), ":")
		if len(fl) < 7 || fl[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(fl[2])
		gid, err2 := strconv.Atoi(fl[3])
		if err := errors.Join(err1, err2); err != nil {
			return user{}, fmt.Errorf("passwd entry of %s: %w", name, err)
		}
		return user{uid: uid, gid: gid, home: fl[5]}, nil
	}
	return user{}, fmt.Errorf("user %s does not exist in the guest", name)
}

// unlockShadow makes a "!"-locked password field "*" in the guest's copy of
// /etc/shadow: without PAM, sshd refuses even key logins to locked accounts.
func unlockShadow(path, name string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	lines := strings.Split(string(b), "\n")
	changed := false
	for i, l := range lines {
		fl := strings.Split(l, ":")
		if len(fl) > 1 && fl[0] == name && strings.HasPrefix(fl[1], "!") {
			fl[1] = "*"
			lines[i] = strings.Join(fl, ":")
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o640)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// mkdirSticky makes a world-writable sticky directory like /tmp (the
// article's template: mkdir /builds; chmod 1777 /builds).
func mkdirSticky(p string) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	return os.Chmod(p, 0o777|os.ModeSticky)
}

func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// allowUsers is the simulated host's guest user plus the accounts the pw
// stand-in created in this guest (usersFile).
func (g *guestInit) allowUsers(m string) string {
	users := []string{g.p.SSHUser}
	if b, err := os.ReadFile(filepath.Join(m, usersFile)); err == nil {
		for _, u := range strings.Fields(string(b)) {
			if u != "" && u != "root" && !strings.ContainsAny(u, "*?!@") {
				users = append(users, u)
			}
		}
	}
	return strings.Join(users, " ")
}

// sessionPath puts the FreeBSD stand-ins first on the PATH of SSH sessions
// of an image guest. Login shells (jobs run `bash -l`) reset PATH from
// /etc/profile and do not see them.
func (g *guestInit) sessionPath(image bool) string {
	if !image {
		return ""
	}
	return "SetEnv PATH=" + standinDir + ":/usr/local/bin:/usr/bin:/bin\n"
}

// Session recording (the RecordSessions knob): what a compromised guest
// with root sees of every SSH session it accepts. sshd runs the wrapper
// instead of each session's command (ForceCommand, with the original in
// SSH_ORIGINAL_COMMAND); it appends a header line and a copy of stdin (the
// stage script, variables included) to a file the host can read after the
// guest is gone, and passes the command's exit status through.
const (
	recordMount   = "var/bhyve-sim-record"
	recordWrapper = "/etc/bhyve-sim/record-session"
	recordScript  = `#!/bin/bash
log=/var/bhyve-sim-record/sessions.log
printf '=== session %s: %s\n' "$(date +%T.%N)" "$SSH_ORIGINAL_COMMAND" >> "$log"
if [ -z "$SSH_ORIGINAL_COMMAND" ]; then
	exec "$SHELL" -l
fi
tee -a "$log" | eval "$SSH_ORIGINAL_COMMAND"
exit "${PIPESTATUS[1]}"
`
)
