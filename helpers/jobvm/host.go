package jobvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostnet"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Host is what one process knows about the bhyve host across jobs: which VMs
// it holds, and one vm-bhyve driver per vm_dir so that per-VM serialisation
// and MAC reservations cover every concurrent job. Settings are re-read per
// job; the Host is not.
type Host struct {
	Holder       Holder
	HolderIsSelf bool
	Held         *HeldSet
	// Dialer connects to guests; nil means a plain net.Dialer. The simulated
	// host injects one that dials inside its network namespace.
	Dialer   guestssh.Dialer
	Observer Observer
	// Logf receives diagnostics that belong in the runner's log rather
	// than the job's (SSH retries and the like). Never secrets.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	drivers map[string]*vmbhyve.Driver
}

// NewHost returns a Host whose VMs are held by the process holderPID.
func NewHost(holderPID int, holderIsSelf bool) (*Host, error) {
	h, err := CurrentHolder(holderPID)
	if err != nil {
		return nil, err
	}
	held := &HeldSet{}
	if holderIsSelf && holderPID == os.Getpid() {
		// A sweep by a self-holding Host treats every VM recorded with this
		// process as holder, and not in its held set, as an orphan. So all
		// Hosts of this process must share one set, or one would sweep
		// another's running VMs.
		held = selfHeld
	}
	return &Host{Holder: h, HolderIsSelf: holderIsSelf, Held: held}, nil
}

// selfHeld is the set of VMs this process holds, shared by every Host whose
// holder is this process.
var selfHeld = &HeldSet{}

// Driver returns the process-wide vm-bhyve driver for these settings.
func (h *Host) Driver(s *settings.Settings) *vmbhyve.Driver {
	key := strings.Join([]string{
		strings.Join(s.Privilege, "\x00"), strings.Join(s.VMCommand, "\x00"),
		strings.Join(s.SysrcCommand, "\x00"), strings.Join(s.ZFSCommand, "\x00"),
		strings.Join(s.InstallCommand, "\x00"), strings.Join(s.RmCommand, "\x00"), s.VMDir,
	}, "\x01")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.drivers == nil {
		h.drivers = map[string]*vmbhyve.Driver{}
	}
	d, ok := h.drivers[key]
	if !ok {
		d = &vmbhyve.Driver{
			VM: s.VMCommand, Sysrc: s.SysrcCommand, ZFS: s.ZFSCommand, Install: s.InstallCommand, Rm: s.RmCommand, Privilege: s.Privilege,
			VMDir: s.VMDir, Cmd: vmbhyve.ExecCommander{},
		}
		h.drivers[key] = d
	}
	return d
}

// Manager builds the lifecycle for one job (or a sweep) from the runner's
// settings. template is the template the job's image selected; shell is the
// command line stage scripts are piped to ("" means the settings' shell).
func (h *Host) Manager(s *settings.Settings, template, shell string) *Manager {
	if template == "" {
		template = s.Template
	}
	if shell == "" {
		shell = s.ShellCommand()
	}
	var netw Network
	if s.Isolation {
		netw = &hostnet.Host{VMs: h.Driver(s), Arp: s.ArpCommand, Ifconfig: s.IfconfigCommand}
	}
	return &Manager{
		Net:    netw,
		VMs:    h.Driver(s),
		Seeds:  h.Driver(s),
		Leases: keaLeases{reader: kea.NewReader(s.LeaseFile)},
		SSH:    &sshConnector{s: s, dialer: h.Dialer, logf: h.Logf},
		Owner:  Owner{HostID: s.HostID, Runner: s.RunnerName},
		Holder: h.Holder,
		Config: Config{
			Template:    template,
			Snapshot:    s.Snapshot,
			NamePrefix:  s.NamePrefix,
			Shell:       shell,
			BootTimeout: s.BootTimeout,
			Limits:      limits(s),
			HostKeys:    s.HostKeys,
		},
		Memory:       sysctlGauge{src: SysctlSource(s)},
		Observer:     h.Observer,
		Held:         h.Held,
		HolderIsSelf: h.HolderIsSelf,
	}
}

// keaLeases finds addresses in Kea's memfile lease files.
type keaLeases struct{ reader *kea.Reader }

func (k keaLeases) WaitAddress(ctx context.Context, mac net.HardwareAddr) (Address, error) {
	w := k.reader.Watch(mac)
	defer w.Close()
	l, err := kea.Wait(ctx, w)
	if err != nil {
		return Address{}, err
	}
	return Address{IP: l.Address, Source: fmt.Sprintf("%s line %d", l.File, l.Line)}, nil
}

// sshConnector opens job connections with the settings' credentials and
// the host key the pin names.
type sshConnector struct {
	s      *settings.Settings
	dialer guestssh.Dialer
	logf   func(string, ...any)
}

func (c *sshConnector) Connect(ctx context.Context, addr netip.Addr, pin HostKeyPin) (Conn, error) {
	cfg, err := c.config(pin)
	if err != nil {
		return nil, err
	}
	client, err := guestssh.Connect(ctx, net.JoinHostPort(addr.String(), strconv.Itoa(c.s.SSH.Port)), cfg)
	if err != nil {
		return nil, classifySSH(err, pin)
	}
	return client, nil
}

func (c *sshConnector) config(pin HostKeyPin) (guestssh.Config, error) {
	signers, err := c.s.Signers()
	if err != nil {
		return guestssh.Config{}, err
	}
	cfg := guestssh.Config{
		User:              c.s.SSH.User,
		Signers:           signers,
		Password:          c.s.SSH.Password.Reveal(),
		Dialer:            c.dialer,
		HandshakeTimeout:  c.s.SSHConnectTimeout,
		KeepAliveInterval: c.s.SSH.KeepAliveInterval,
		KillGrace:         c.s.KillGrace,
		Logf:              c.logf,
	}
	if pin.VMKey != nil {
		// Known for certain, so verified even with
		// insecure_skip_host_key_check, which is about template pins.
		cfg.HostKeys = []ssh.PublicKey{pin.VMKey}
		cfg.HostKeyAlias = pin.VM
		cfg.HostKeyAdvice = perVMAdvice(pin)
		return cfg, nil
	}
	if cfg.HostKeys, err = c.s.HostKeysFor(pin.Template); err != nil {
		return guestssh.Config{}, err
	}
	cfg.HostKeyAlias = pin.Template
	cfg.InsecureIgnoreHostKey = c.s.SSH.InsecureSkipHostKeyCheck
	return cfg, nil
}

// classifySSH decides who must act on an SSH failure. A host key that does
// not match a template's pin, or credentials the guest refuses, will not fix
// themselves on a retry: the operator must update the pin or the key (or
// investigate, since a changed host key can mean the address is not our VM).
// A per-VM key that does not match is no setting to fix: the guest did not
// apply it, or something else answered at its address. That fails the
// job as a system failure (a retry boots a new VM with a new key and
// address).
func classifySSH(err error, pin HostKeyPin) error {
	var hk *guestssh.HostKeyError
	var auth *guestssh.AuthError
	switch {
	case errors.As(err, &hk) && pin.VMKey != nil:
		return err
	case errors.As(err, &hk), errors.As(err, &auth):
		return &failure.ConfigError{Err: err}
	}
	return err
}
