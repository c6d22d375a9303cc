// Package sim runs a simulated FreeBSD host for tests of the bhyve
// executor: a fake vm-bhyve `vm` command and `sysrc` over a fake ZFS, and
// guests that really boot (a network namespace on a bridge, an address from
// a real Kea DHCPv4 server, a real sshd with the template's host key), all
// inside a network namespace of the host's own.
//
//	h := sim.New(t, sim.Options{})
//	out, err := h.Command(ctx, h.VMCommand(), "clone", h.Template()+"@"+h.Snapshot(), "job-1").CombinedOutput()
//
// The executor under test runs inside the host namespace (Command,
// DialContext) exactly as it would run on the FreeBSD host. See README.md.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/host"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/sysctl"
)

// Version modes of the fake vm command.
const (
	// Version16 is vm-bhyve 1.6: `vm start` exits 0 even when it failed,
	// logs are stamped "Jan 02 15:04:05", MACs come from md5.
	Version16 = simstate.Version16
	// Version17 is vm-bhyve 1.7.x (the default): `vm start` exits with the
	// number of guests that failed, "Suspended" state, ISO log stamps.
	Version17 = simstate.Version17
	// Version18 is 1.8-devel: 1.7 plus the TAGS column of `vm list`.
	Version18 = simstate.Version18
)

// Options configure a simulated host. Zero values take the defaults.
type Options struct {
	// Root holds all state (default: t.TempDir() for New, /var/tmp/bhyve-sim
	// for Start).
	Root string
	// VMDir is vm-bhyve's vm_dir, mounted "ZFS dataset zroot/vm" (ROOT/vm).
	VMDir string
	// LeaseFile is Kea's memfile lease file (ROOT/kea/kea-leases4.csv).
	LeaseFile string
	// BinDir receives the vm and sysrc wrappers (ROOT/bin).
	BinDir string
	// HostName is the host name vm-bhyve writes into run.lock (bhyvehost).
	HostName string
	// Subnet of the switch; the host takes its first address (10.77.0.0/24).
	Subnet netip.Prefix
	// LFCInterval is Kea's lfc-interval (1h).
	LFCInterval time.Duration
	// ValidLifetime is Kea's valid-lifetime (10m).
	ValidLifetime time.Duration
	// VersionMode selects vm-bhyve behaviour: Version16, Version17 (default)
	// or Version18.
	VersionMode string
	// Template and Snapshot name the template made at start (tmpl@base).
	Template, Snapshot string
	// SSHUser is the guest login user, created on the machine if absent
	// (freebsd).
	SSHUser string
	// GuestFiles are machine files linked into the default template's disk
	// by guest path, e.g. {"/usr/local/bin/gitlab-runner": "/abs/bin/gitlab-runner-sandbox"}.
	GuestFiles map[string]string
	// SharedSwitch leaves the host's switch not private (guests reach each
	// other); by default it is private, as the README's setup makes it
	// (vm switch private public on).
	SharedSwitch bool
	// Binary is a built bhyve-sim; empty means $BHYVE_SIM_BINARY or a build
	// of ci/cmd/bhyve-sim made once per test process.
	Binary string
}

// Host is a running simulated FreeBSD host.
type Host struct {
	cfg       *simstate.Config
	closeOnce sync.Once
	closeErr  error
}

// Start brings a host up. The caller must Close it.
func Start(ctx context.Context, o Options) (*Host, error) {
	bin := o.Binary
	if bin == "" {
		b, err := Binary()
		if err != nil {
			return nil, err
		}
		bin = b
	}
	cfg, err := host.Up(ctx, host.Options{
		Root:          o.Root,
		VMDir:         o.VMDir,
		LeaseFile:     o.LeaseFile,
		BinDir:        o.BinDir,
		HostName:      o.HostName,
		Subnet:        o.Subnet,
		LFCInterval:   o.LFCInterval,
		ValidLifetime: o.ValidLifetime,
		VersionMode:   o.VersionMode,
		Template:      o.Template,
		Snapshot:      o.Snapshot,
		SSHUser:       o.SSHUser,
		GuestFiles:    o.GuestFiles,
		SharedSwitch:  o.SharedSwitch,
		Binary:        bin,
	})
	if err != nil {
		return nil, err
	}
	return &Host{cfg: cfg}, nil
}

// Close removes every process, namespace, link and file of the host. It is
// idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() { h.closeErr = host.Down(h.cfg.Root) })
	return h.closeErr
}

// Root is the host's state directory.
func (h *Host) Root() string { return h.cfg.Root }

// ID is the short id in the host's namespace and link names.
func (h *Host) ID() string { return h.cfg.ID }

// VMCommand is the path of the installed fake vm.
func (h *Host) VMCommand() string { return h.cfg.VMCommand() }

// SysrcCommand is the path of the installed fake sysrc.
func (h *Host) SysrcCommand() string { return h.cfg.SysrcCommand() }

// ArpCommand is the path of the host's arp(8) (ROOT/bin/arp).
func (h *Host) ArpCommand() string { return h.cfg.ArpCommand() }

// IfconfigCommand is the path of the host's ifconfig(8) (ROOT/bin/ifconfig),
// the if_bridge commands only.
func (h *Host) IfconfigCommand() string { return h.cfg.IfconfigCommand() }

// Switch is the vm-bhyve switch guests join (a manual switch on Bridge).
func (h *Host) Switch() string { return h.cfg.Switch }

// ZFSCommand is the fake zfs(8): `list -H -o name,mountpoint TARGET` and
// `destroy -r DATASET` over the host's fake ZFS.
func (h *Host) ZFSCommand() string { return h.cfg.ZFSCommand() }

// BinDir holds vm and sysrc; put it first in PATH.
func (h *Host) BinDir() string { return h.cfg.BinDir }

// VMDir is vm-bhyve's vm_dir.
func (h *Host) VMDir() string { return h.cfg.VMDir }

// Dataset is the ZFS dataset of vm_dir ("zroot/vm").
func (h *Host) Dataset() string { return h.cfg.Dataset }

// LeaseFile is the Kea memfile lease file.
func (h *Host) LeaseFile() string { return h.cfg.LeaseFile }

// NetNS is the host's network namespace (ip netns name).
func (h *Host) NetNS() string { return h.cfg.NetNS }

// HostName is what run.lock contains for this host.
func (h *Host) HostName() string { return h.cfg.HostName }

// Subnet is the switch's subnet.
func (h *Host) Subnet() netip.Prefix { return h.cfg.SubnetPrefix() }

// HostAddr is the host's address on the switch.
func (h *Host) HostAddr() netip.Addr { return netip.MustParseAddr(h.cfg.HostAddr) }

// Bridge is the switch's bridge inside the host namespace.
func (h *Host) Bridge() string { return h.cfg.Bridge }

// VersionMode is the vm-bhyve behaviour in effect.
func (h *Host) VersionMode() string { return h.cfg.VersionMode }

// Template is the template made at start.
func (h *Host) Template() string { return h.cfg.Template }

// Templates lists every template on the host: Template and those made by
// AddTemplate.
func (h *Host) Templates() []string { return append([]string(nil), h.cfg.Templates...) }

// Snapshot is the template's snapshot.
func (h *Host) Snapshot() string { return h.cfg.Snapshot }

// SSHUser is the login user of every guest.
func (h *Host) SSHUser() string { return h.cfg.SSHUser }

// SSHKeyPath is the private key (OpenSSH format) the templates authorise.
func (h *Host) SSHKeyPath() string { return h.cfg.SSHKey() }

// KnownHostsPath is a known_hosts file with a line per template host key
// whose pattern matches every guest address and the template name.
func (h *Host) KnownHostsPath() string { return h.cfg.KnownHosts() }

// HostKey is the pinned (ed25519) host key of the default template, which
// every clone of it presents.
func (h *Host) HostKey() ssh.PublicKey {
	k, err := h.TemplateHostKey(h.cfg.Template)
	if err != nil {
		panic(fmt.Sprintf("sim: host key of %s: %v", h.cfg.Template, err))
	}
	return k
}

// TemplateHostKey returns a template's ed25519 host key (or its only key).
func (h *Host) TemplateHostKey(name string) (ssh.PublicKey, error) {
	files := host.HostKeyFiles(h.cfg, name)
	if len(files) == 0 {
		return nil, fmt.Errorf("template %s has no host key", name)
	}
	pick := files[0]
	for _, f := range files {
		if strings.HasSuffix(f, "ssh_host_ed25519_key.pub") {
			pick = f
		}
	}
	b, err := os.ReadFile(pick)
	if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse host key %s: %w", pick, err)
	}
	return k, nil
}

// Signer loads SSHKeyPath for golang.org/x/crypto/ssh clients.
func (h *Host) Signer() (ssh.Signer, error) {
	b, err := os.ReadFile(h.SSHKeyPath())
	if err != nil {
		return nil, fmt.Errorf("read ssh key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse ssh key: %w", err)
	}
	return s, nil
}

// Env is the environment `bhyve-sim up` exports, for a process acting as
// the FreeBSD host: PATH with the fake vm first, BHYVE_SIM_* variables.
func (h *Host) Env() []string {
	path := h.cfg.BinDir
	if p := os.Getenv("PATH"); p != "" {
		path += ":" + p
	}
	return []string{
		"PATH=" + path,
		"BHYVE_SIM_ROOT=" + h.cfg.Root,
		"BHYVE_SIM_NETNS=" + h.cfg.NetNS,
		"BHYVE_SIM_LEASES=" + h.cfg.LeaseFile,
		"BHYVE_SIM_SSH_KEY=" + h.cfg.SSHKey(),
		"BHYVE_SIM_KNOWN_HOSTS=" + h.cfg.KnownHosts(),
		"BHYVE_SIM_USER=" + h.cfg.SSHUser,
	}
}

// TemplateOption shapes AddTemplate.
type TemplateOption func(*host.TemplateOptions)

// WithOwnHostKey gives the template host keys of its own instead of the
// default template's.
func WithOwnHostKey() TemplateOption {
	return func(o *host.TemplateOptions) { o.OwnHostKey = true }
}

// WithHostKeyTypes sets the template's host key types (ed25519, ecdsa,
// rsa); by default it has only an ed25519 key.
func WithHostKeyTypes(types ...string) TemplateOption {
	return func(o *host.TemplateOptions) { o.HostKeyTypes = types }
}

// WithFiles links machine files into the template's disk by guest path
// (see Options.GuestFiles).
func WithFiles(files map[string]string) TemplateOption {
	return func(o *host.TemplateOptions) { o.Files = files }
}

// WithGuestConfig overrides loader, cpu and memory in the template's conf
// (empty strings keep the defaults bhyveload, 2, 1024M).
func WithGuestConfig(loader, cpu, memory string) TemplateOption {
	return func(o *host.TemplateOptions) { o.Loader, o.CPU, o.Memory = loader, cpu, memory }
}

// AddTemplate creates another stopped template and snapshots it as
// NAME@SNAPSHOT (no snapshot if empty). Its host keys join KnownHostsPath.
func (h *Host) AddTemplate(name, snapshot string, opts ...TemplateOption) error {
	var o host.TemplateOptions
	for _, f := range opts {
		f(&o)
	}
	return host.AddTemplate(h.cfg, name, snapshot, o)
}

// RunLFC makes Kea run its lease file cleanup now (real kea-lfc, started by
// Kea's own timer) and waits for it to finish.
func (h *Host) RunLFC(ctx context.Context) error { return host.RunLFC(ctx, h.cfg) }

// GuestLog is the path of a guest's console log (bhyve's stdio, udhcpc and
// sshd output), useful when a test fails.
func (h *Host) GuestLog(name string) string { return h.cfg.GuestLog(name) }

// VMLog is NAME/vm-bhyve.log.
func (h *Host) VMLog(name string) string { return filepath.Join(h.cfg.VMPath(name), "vm-bhyve.log") }

// VMInvocations returns the argument lists of every `vm` command run on the
// host so far, oldest first, including vm-bhyve's own background `_run`.
func (h *Host) VMInvocations() ([][]string, error) {
	b, err := os.ReadFile(h.cfg.InvocationLog())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read vm invocation log: %w", err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line != "" {
			out = append(out, strings.Fields(line))
		}
	}
	return out, nil
}

// ConfPath is NAME/NAME.conf.
func (h *Host) ConfPath(name string) string { return h.cfg.ConfPath(name) }

// Resources lists the host's live processes, namespaces, links and mounts.
// After Close it must be empty.
type Resources = host.Resources

// Process is one entry of Resources.
type Process = host.Process

// Resources lists what the host has running. It works after Close too.
func (h *Host) Resources() Resources { return host.Inventory(h.cfg.ID, h.cfg.Root) }

// Attach returns the host already running at root (brought up by another
// process, e.g. `bhyve-sim up`), without taking ownership: Close on it tears
// that host down.
func Attach(root string) (*Host, error) {
	cfg, alive := host.Alive(root)
	if !alive {
		return nil, fmt.Errorf("no simulated host is running at %s", root)
	}
	return &Host{cfg: cfg}, nil
}

// SysctlCommand is the fake sysctl(8): the host's memory and CPU figures
// (hw.pagesize, hw.physmem, hw.ncpu, vm.stats.vm.v_*_count), 16 GiB with
// 12 GiB free and 8 CPUs until a test changes them.
func (h *Host) SysctlCommand() string { return h.cfg.SysctlCommand() }

// SetSysctl changes numeric sysctl variables of the host; the next sysctl
// run reads them.
func (h *Host) SetSysctl(values map[string]uint64) error {
	v, err := sysctl.Load(h.cfg.SysctlValues())
	if err != nil {
		return err
	}
	for k, n := range values {
		v[k] = n
	}
	return sysctl.Store(h.cfg.SysctlValues(), v)
}

// SetFreeMemory makes the host's free memory bytes (rounded down to whole
// pages), none of it inactive.
func (h *Host) SetFreeMemory(bytes uint64) error {
	v, err := sysctl.Load(h.cfg.SysctlValues())
	if err != nil {
		return err
	}
	return h.SetSysctl(map[string]uint64{"vm.stats.vm.v_free_count": bytes / v["hw.pagesize"], "vm.stats.vm.v_inactive_count": 0})
}
