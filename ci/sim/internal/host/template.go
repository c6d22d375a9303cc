package host

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// TemplateOptions shape a template VM.
type TemplateOptions struct {
	// HostKeyTypes are the host keys in the template's disk (default:
	// ed25519 only). Every clone carries the same keys.
	HostKeyTypes []string
	// OwnHostKey gives the template fresh host keys instead of sharing the
	// first template's ones.
	OwnHostKey bool
	// Loader, CPU, Memory override the guest configuration.
	Loader, CPU, Memory string
	// Files maps guest paths to machine files the disk carries, e.g. a
	// gitlab-runner binary at /usr/local/bin/gitlab-runner, as an operator
	// installs one into a real template. Linked where the guest sees the
	// machine file through its root overlay (a 150 MB copy per boot is
	// waste), copied from directories guests mount afresh (/tmp, /run...).
	Files map[string]string
}

// AddTemplate creates a stopped VM as `vm create` would leave it (conf with
// uuid and network0_mac, a disk) and snapshots it as NAME@SNAP. Its disk is
// a directory of files laid over the guest's root at boot: the host keys in
// etc/ssh and the user's authorized_keys.
func AddTemplate(cfg *simstate.Config, name, snap string, o TemplateOptions) error {
	if name == "" || strings.ContainsAny(name, "/@ ") {
		return fmt.Errorf("invalid template name %q", name)
	}
	if _, err := os.Stat(cfg.VMPath(name)); err == nil {
		return fmt.Errorf("template %s: %s already exists", name, cfg.VMPath(name))
	}
	userPub, err := ensureUserKey(cfg)
	if err != nil {
		return err
	}
	store := zfs.Open(cfg.ZFSDir())
	ds := cfg.DatasetFor(name)
	if err := store.Update(func(db *zfs.DB) error { return db.Create(ds, cfg.VMPath(name)) }); err != nil {
		return fmt.Errorf("template %s: %w", name, err)
	}
	dir := cfg.VMPath(name)
	disk := filepath.Join(dir, "disk0")

	kinds := o.HostKeyTypes
	if len(kinds) == 0 {
		kinds = []string{"ed25519"}
	}
	sshDir := filepath.Join(disk, "etc", "ssh")
	if err := os.MkdirAll(sshDir, 0o755); err != nil {
		return err
	}
	shared := ""
	if !o.OwnHostKey && len(cfg.Templates) > 0 {
		shared = filepath.Join(cfg.VMPath(cfg.Templates[0]), "disk0", "etc", "ssh")
	}
	for _, k := range kinds {
		base := filepath.Join(sshDir, "ssh_host_"+k+"_key")
		if shared != "" {
			if priv, err := os.ReadFile(filepath.Join(shared, "ssh_host_"+k+"_key")); err == nil {
				pub, err := os.ReadFile(filepath.Join(shared, "ssh_host_"+k+"_key.pub"))
				if err != nil {
					return err
				}
				if err := os.WriteFile(base, priv, 0o600); err != nil {
					return err
				}
				if err := os.WriteFile(base+".pub", pub, 0o644); err != nil {
					return err
				}
				continue
			}
		}
		priv, pub, err := genKey(k, "root@"+name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(base, priv, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(base+".pub", []byte(pub), 0o644); err != nil {
			return err
		}
	}

	u, err := user.Lookup(cfg.SSHUser)
	if err != nil {
		return fmt.Errorf("ssh user %s: %w", cfg.SSHUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	home := u.HomeDir
	if home == "" {
		home = "/home/" + cfg.SSHUser
	}
	dotSSH := filepath.Join(disk, strings.TrimPrefix(home, "/"), ".ssh")
	if err := os.MkdirAll(dotSSH, 0o700); err != nil {
		return err
	}
	ak := filepath.Join(dotSSH, "authorized_keys")
	if err := os.WriteFile(ak, []byte(userPub), 0o600); err != nil {
		return err
	}
	for _, p := range []string{filepath.Dir(dotSSH), dotSSH, ak} {
		_ = os.Lchown(p, uid, gid)
	}
	for guestPath, machinePath := range o.Files {
		if err := addFile(disk, guestPath, machinePath); err != nil {
			return fmt.Errorf("template %s: %w", name, err)
		}
	}
	// The local cache directory (cache_dir), like /builds world-writable
	// and sticky; the guest makes /builds itself.
	cache := filepath.Join(disk, "cache")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(cache, 0o777|os.ModeSticky); err != nil {
		return err
	}
	rc := fmt.Sprintf("hostname=%q\nifconfig_vtnet0=\"SYNCDHCP\"\nsshd_enable=\"YES\"\n", name)
	if err := os.WriteFile(filepath.Join(disk, "etc", "rc.conf"), []byte(rc), 0o644); err != nil {
		return err
	}

	// NAME.conf as `vm create -t freebsd` writes it: the template copied,
	// then uuid and network0_mac appended by sysrc.
	loader := orDefault(o.Loader, "bhyveload")
	cpu := orDefault(o.CPU, "2")
	mem := orDefault(o.Memory, "1024M")
	var b [3]byte
	_, _ = rand.Read(b[:])
	mac := fmt.Sprintf("58:9c:fc:0%x:%02x:%02x", b[0]&0x0f, b[1], b[2])
	conf := fmt.Sprintf(`loader="%s"
cpu=%s
memory=%s
network0_type="virtio-net"
network0_switch="%s"
disk0_type="virtio-blk"
disk0_name="disk0"
disk0_dev="file"
uuid="%s"
network0_mac="%s"
`, loader, cpu, mem, cfg.Switch, newUUID(), mac)
	if err := os.WriteFile(cfg.ConfPath(name), []byte(conf), 0o644); err != nil {
		return err
	}
	if snap != "" {
		if err := store.Update(func(db *zfs.DB) error { return db.SnapshotRecursive(ds, snap) }); err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", name, snap, err)
		}
	}
	cfg.Templates = append(cfg.Templates, name)
	if err := writeKnownHosts(cfg); err != nil {
		return err
	}
	return cfg.Save()
}

// guestFresh are the machine directories a guest mounts afresh
// (guest.buildRoot), so a link into them would dangle inside the guest.
var guestFresh = []string{"/tmp", "/var/tmp", "/run", "/dev", "/proc", "/sys"}

// addFile puts machinePath into the disk at guestPath: a link where the
// guest sees the machine's file through its root overlay, a copy where it
// does not.
func addFile(disk, guestPath, machinePath string) error {
	if !filepath.IsAbs(guestPath) || !filepath.IsAbs(machinePath) {
		return fmt.Errorf("file %s -> %s: both paths must be absolute", guestPath, machinePath)
	}
	st, err := os.Stat(machinePath)
	if err != nil {
		return fmt.Errorf("file for %s: %w", guestPath, err)
	}
	dst := filepath.Join(disk, guestPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	for _, d := range guestFresh {
		if strings.HasPrefix(filepath.Clean(machinePath)+"/", d+"/") {
			b, err := os.ReadFile(machinePath)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, st.Mode().Perm())
		}
	}
	return os.Symlink(machinePath, dst)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
