// Package host brings a simulated FreeBSD host up and tears it down: the
// host's network namespace with the switch bridge, a real Kea DHCPv4 server,
// the fake vm and sysrc commands installed as wrappers, the vm_dir tree with
// a snapshotted template, and the SSH material to reach guests.
package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// Options configure a host; zero values take the defaults.
type Options struct {
	Root          string
	VMDir         string
	LeaseFile     string
	BinDir        string
	HostName      string
	Subnet        netip.Prefix
	LFCInterval   time.Duration
	ValidLifetime time.Duration
	VersionMode   string
	Template      string
	Snapshot      string
	SSHUser       string
	Dataset       string
	// GuestFiles are machine files every template's disk carries, by guest
	// path (see TemplateOptions.Files).
	GuestFiles map[string]string
	// SharedSwitch leaves the switch as vm-bhyve creates it, not private:
	// guests can reach each other (the README's setup makes it private).
	SharedSwitch bool
	// Binary is the bhyve-sim executable to install into the root.
	Binary string
	// Log receives progress diagnostics (nil: discarded).
	Log io.Writer
}

// Defaults.
const (
	DefaultHostName = "bhyvehost"
	DefaultTemplate = "tmpl"
	DefaultSnapshot = "base"
	DefaultSSHUser  = "freebsd"
	DefaultDataset  = "zroot/vm"
)

// DefaultSubnet is the switch's subnet. Every host has its own network
// namespace, so parallel hosts can all use it.
var DefaultSubnet = netip.MustParsePrefix("10.77.0.0/24")

func (o *Options) fill() error {
	if o.Root == "" {
		o.Root = simstate.DefaultRoot
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	o.Root = root
	abs := func(p *string, def string) error {
		if *p == "" {
			*p = def
		}
		v, err := filepath.Abs(*p)
		*p = v
		return err
	}
	// Kea 2.2 builds a "name=value" database access string from the lease
	// file path and cannot parse one with blanks in it.
	leaseDefault := filepath.Join(root, "kea", "kea-leases4.csv")
	if strings.ContainsAny(root, " \t\n") {
		leaseDefault = filepath.Join("/var/tmp", "bsim-"+simstate.IDForRoot(root)+"-kea", "kea-leases4.csv")
	}
	if strings.ContainsAny(o.LeaseFile, " \t\n") {
		return fmt.Errorf("lease file %q: kea-dhcp4 2.2 cannot use a path containing blanks", o.LeaseFile)
	}
	if err := errors.Join(
		abs(&o.VMDir, filepath.Join(root, "vm")),
		abs(&o.LeaseFile, leaseDefault),
		abs(&o.BinDir, filepath.Join(root, "bin")),
	); err != nil {
		return fmt.Errorf("paths: %w", err)
	}
	if o.HostName == "" {
		o.HostName = DefaultHostName
	}
	if !o.Subnet.IsValid() {
		o.Subnet = DefaultSubnet
	}
	if !o.Subnet.Addr().Is4() || o.Subnet.Bits() > 28 {
		return fmt.Errorf("subnet %s: need an IPv4 prefix of /28 or wider", o.Subnet)
	}
	if o.LFCInterval == 0 {
		o.LFCInterval = time.Hour
	}
	if o.ValidLifetime == 0 {
		o.ValidLifetime = 10 * time.Minute
	}
	switch o.VersionMode {
	case "":
		o.VersionMode = simstate.Version17
	case simstate.Version16, simstate.Version17, simstate.Version18:
	default:
		return fmt.Errorf("version mode %q: want 1.6, 1.7 or 1.8", o.VersionMode)
	}
	if o.Template == "" {
		o.Template = DefaultTemplate
	}
	if o.Snapshot == "" {
		o.Snapshot = DefaultSnapshot
	}
	if o.SSHUser == "" {
		o.SSHUser = DefaultSSHUser
	}
	if o.Dataset == "" {
		o.Dataset = DefaultDataset
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find bhyve-sim binary: %w", err)
		}
		o.Binary = exe
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// Up brings a host up. A stale host at the same root is torn down first.
// On failure everything already made is removed again.
func Up(ctx context.Context, o Options) (*simstate.Config, error) {
	toolPaths, err := Prerequisites()
	if err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(simstate.StatePath(o.Root)); err == nil || netnsExists(simstate.NetNSName(simstate.IDForRoot(o.Root))) {
		fmt.Fprintf(o.Log, "bhyve-sim: removing stale host at %s\n", o.Root)
		if err := Down(o.Root); err != nil {
			return nil, fmt.Errorf("remove stale host: %w", err)
		}
	}
	id := simstate.IDForRoot(o.Root)
	cfg := &simstate.Config{
		ID:            id,
		Root:          o.Root,
		VMDir:         o.VMDir,
		Dataset:       o.Dataset,
		LeaseFile:     o.LeaseFile,
		BinDir:        o.BinDir,
		HostName:      o.HostName,
		Subnet:        o.Subnet.Masked().String(),
		HostAddr:      hostAddr(o.Subnet).String(),
		LFCInterval:   int(o.LFCInterval / time.Second),
		ValidLifetime: int(o.ValidLifetime / time.Second),
		VersionMode:   o.VersionMode,
		Template:      o.Template,
		Snapshot:      o.Snapshot,
		SSHUser:       o.SSHUser,
		NetNS:         simstate.NetNSName(id),
		Bridge:        simstate.BridgeName(id),
		Switch:        "public",
		Tools:         toolPaths,
	}
	if cfg.LFCInterval < 1 {
		cfg.LFCInterval = 1
	}
	if err := up(ctx, cfg, o); err != nil {
		return nil, errors.Join(err, Down(cfg.Root))
	}
	return cfg, nil
}

func up(ctx context.Context, cfg *simstate.Config, o Options) error {
	// Record what is created before creating it, so Down can remove it
	// even if Up dies half way.
	mkdir := func(p string) error {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
		cfg.Created = append(cfg.Created, p)
		return os.MkdirAll(p, 0o755)
	}
	if err := mkdir(cfg.Root); err != nil {
		return fmt.Errorf("create root: %w", err)
	}
	for _, d := range []string{"run", "log", "faults", "zfs", "dev", "guests", "ssh", "etc", "libexec", "usr"} {
		if err := mkdir(filepath.Join(cfg.Root, d)); err != nil {
			return err
		}
	}
	_ = os.MkdirAll(cfg.VMMDir(), 0o755)
	for _, d := range []string{cfg.BinDir, cfg.VMDir, filepath.Dir(cfg.LeaseFile)} {
		if err := mkdir(d); err != nil {
			return err
		}
	}
	cfg.KeaConfig = filepath.Join(cfg.Root, "etc", "kea-dhcp4.conf")
	cfg.KeaSocket = filepath.Join(cfg.RunDir(), "kea4-ctrl.sock")
	if len(cfg.KeaSocket) > 100 {
		// sun_path holds 108 bytes; a deep root needs a short socket path.
		cfg.KeaSocket = "/tmp/bsim-" + cfg.ID + "-kea4.sock"
		cfg.Created = append(cfg.Created, cfg.KeaSocket)
	}
	for _, f := range []string{cfg.LeaseFile, cfg.LeaseFile + ".1", cfg.LeaseFile + ".2",
		cfg.LeaseFile + ".output", cfg.LeaseFile + ".completed", cfg.LeaseFile + ".pid"} {
		if _, err := os.Stat(f); err != nil {
			cfg.Created = append(cfg.Created, f)
		}
	}
	if err := cfg.Save(); err != nil {
		return err
	}

	fmt.Fprintf(o.Log, "bhyve-sim: installing vm and sysrc into %s\n", cfg.BinDir)
	if err := install(cfg, o.Binary); err != nil {
		return err
	}
	if err := ensureUser(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "bhyve-sim: network namespace %s, bridge %s (%s)\n", cfg.NetNS, cfg.Bridge, cfg.Subnet)
	if err := setupNetwork(ctx, cfg); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "bhyve-sim: starting kea-dhcp4 (leases in %s)\n", cfg.LeaseFile)
	if err := startKea(ctx, cfg); err != nil {
		return err
	}
	if err := layout(cfg, !o.SharedSwitch); err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "bhyve-sim: template %s@%s\n", cfg.Template, cfg.Snapshot)
	if err := AddTemplate(cfg, cfg.Template, cfg.Snapshot, TemplateOptions{Files: o.GuestFiles}); err != nil {
		return err
	}
	return cfg.Save()
}

// install copies the binary into the root (the host must not depend on a
// build cache that may vanish) and writes the vm and sysrc wrappers. The
// wrappers are sh scripts like the real vm, so $0 is the path they were
// invoked by, and they carry --root so sudo or env -i need nothing else.
func install(cfg *simstate.Config, binary string) error {
	cfg.Binary = filepath.Join(cfg.Root, "libexec", "bhyve-sim")
	in, err := os.Open(binary)
	if err != nil {
		return fmt.Errorf("install bhyve-sim: %w", err)
	}
	defer in.Close()
	tmp := cfg.Binary + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("install bhyve-sim: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("install bhyve-sim: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("install bhyve-sim: %w", err)
	}
	if err := os.Rename(tmp, cfg.Binary); err != nil {
		return fmt.Errorf("install bhyve-sim: %w", err)
	}
	for _, cmd := range []string{"vm", "sysrc", "zfs", "sysctl", "arp", "ifconfig"} {
		p := filepath.Join(cfg.BinDir, cmd)
		if _, err := os.Stat(p); err != nil {
			cfg.Created = append(cfg.Created, p)
		}
		script := fmt.Sprintf("#!/bin/sh\n# %s of the simulated FreeBSD host at %s (bhyve-sim)\nexec %s --root %s --argv0 \"$0\" %s \"$@\"\n",
			cmd, cfg.Root, shQuote(cfg.Binary), shQuote(cfg.Root), cmd)
		if err := simstate.WriteFileAtomic(p, []byte(script), 0o755); err != nil {
			return err
		}
	}
	return cfg.Save()
}

// shQuote quotes for sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ensureUser creates the guest login user on the machine if absent
// (`useradd --system --no-create-home --shell /bin/bash`); guests see the
// machine's /etc/passwd through their root overlay. The user stays after
// Down: other hosts may be using it.
func ensureUser(ctx context.Context, cfg *simstate.Config) error {
	out, err := exec.CommandContext(ctx, mustTool("getent"), "passwd", cfg.SSHUser).Output()
	if err == nil && len(out) > 0 {
		return nil
	}
	err = run(ctx, cfg.Tools.Useradd, "--system", "--no-create-home", "--home-dir", "/home/"+cfg.SSHUser,
		"--shell", "/bin/bash", "--password", "*", "--comment", "bhyve-sim guest user", cfg.SSHUser)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("create user %s: %w", cfg.SSHUser, err)
	}
	return nil
}

// layout writes rc.conf (vm_enable, vm_dir), the vm_dir skeleton with a
// manual switch onto the host's bridge, and the datastore's dataset.
func layout(cfg *simstate.Config, private bool) error {
	rc := fmt.Sprintf("vm_enable=\"YES\"\nvm_dir=\"zfs:%s\"\nvm_list=\"\"\nvm_delay=\"2\"\n", cfg.Dataset)
	if err := os.WriteFile(cfg.RCConf(), []byte(rc), 0o644); err != nil {
		return fmt.Errorf("rc.conf: %w", err)
	}
	for _, d := range []string{".config", ".templates", ".iso", ".img"} {
		if err := os.MkdirAll(filepath.Join(cfg.VMDir, d), 0o755); err != nil {
			return err
		}
	}
	// The host has edk2-bhyve and its CSM flavour installed; uefi-devel and
	// uefi-custom guests find no firmware, as on a host without them.
	if err := os.MkdirAll(cfg.UEFIFirmwareDir(), 0o755); err != nil {
		return err
	}
	for _, fw := range []string{"BHYVE_UEFI.fd", "BHYVE_UEFI_VARS.fd", "BHYVE_UEFI_CSM.fd"} {
		if err := os.WriteFile(filepath.Join(cfg.UEFIFirmwareDir(), fw), []byte("simulated "+fw+"\n"), 0o644); err != nil {
			return err
		}
	}
	// util::init (lib/vm-util, `vm init`) copies sample-templates/default.conf
	// into .templates/ and nothing else; `vm create` without -t uses it.
	def := filepath.Join(cfg.VMDir, ".templates", "default.conf")
	if _, err := os.Stat(def); err != nil {
		profile := "loader=\"bhyveload\"\ncpu=1\nmemory=256M\nnetwork0_type=\"virtio-net\"\nnetwork0_switch=\"public\"\ndisk0_type=\"virtio-blk\"\ndisk0_name=\"disk0.img\"\n"
		if err := os.WriteFile(def, []byte(profile), 0o644); err != nil {
			return err
		}
	}
	sys := fmt.Sprintf("switch_list=\"%s\"\ntype_%s=\"manual\"\nbridge_%s=\"%s\"\n", cfg.Switch, cfg.Switch, cfg.Switch, cfg.Bridge)
	if private {
		// What `vm switch private NAME on` stores (switch::private).
		sys += fmt.Sprintf("private_%s=\"yes\"\n", cfg.Switch)
	}
	if err := os.WriteFile(cfg.SystemConf(), []byte(sys), 0o644); err != nil {
		return err
	}
	store := zfs.Open(cfg.ZFSDir())
	return store.Update(func(db *zfs.DB) error {
		if db.Get(cfg.Dataset) != nil {
			return nil
		}
		return db.Create(cfg.Dataset, cfg.VMDir)
	})
}

// Alive reports whether the host at root is up (state, namespace and Kea).
func Alive(root string) (*simstate.Config, bool) {
	cfg, err := simstate.Load(root)
	if err != nil || !netnsExists(cfg.NetNS) {
		return cfg, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = keaCommand(ctx, cfg, "status-get")
	return cfg, err == nil
}

// Down removes everything a host made: its processes (guests included),
// its network namespace and the files and directories Up created. It works
// from the state file, and without one from the id derived from root.
func Down(root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	cfg, lerr := simstate.Load(root)
	if lerr != nil {
		id := simstate.IDForRoot(root)
		cfg = &simstate.Config{ID: id, Root: root, NetNS: simstate.NetNSName(id)}
	}
	var errs []error
	if err := killAll(cfg.ID, cfg.NetNS); err != nil {
		errs = append(errs, err)
	}
	if netnsExists(cfg.NetNS) {
		if err := run(context.Background(), mustTool("ip"), "netns", "delete", cfg.NetNS); err != nil {
			errs = append(errs, err)
		}
	}
	if lerr == nil {
		for i := len(cfg.Created) - 1; i >= 0; i-- {
			if err := os.RemoveAll(cfg.Created[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(simstate.StatePath(root)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs the host's processes until none is left. Killing a guest
// init ends its PID namespace, which takes sshd and udhcpc with it (no DHCP
// release, as for a destroyed VM).
func killAll(id, ns string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ps := processes(id, ns)
		if len(ps) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes survived SIGKILL: %v", ps)
		}
		for _, p := range ps {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DownAll removes the namespaces and processes of every simulated host on
// the machine (roots are unknown without their state, so their files stay).
// It is for cleaning up by hand after crashed test runs.
func DownAll() error {
	var errs []error
	out, _ := exec.Command(mustTool("ip"), "netns", "list").Output()
	ids := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.HasPrefix(f[0], "bsim-") {
			ids[strings.TrimPrefix(f[0], "bsim-")] = true
		}
	}
	for _, id := range markerIDs() {
		ids[id] = true
	}
	for id := range ids {
		ns := simstate.NetNSName(id)
		if err := killAll(id, ns); err != nil {
			errs = append(errs, err)
		}
		if netnsExists(ns) {
			if err := run(context.Background(), mustTool("ip"), "netns", "delete", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
