package simstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Duration is a time.Duration that reads and writes as "1.5s" in JSON, so
// fault files stay editable by hand.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Fault is the set of knobs for one VM name. Knobs stored for a template
// apply to its clones too (found through the clone origin), and a clone's own
// knobs win. Zero values mean "not set".
type Fault struct {
	// BootDelay is the time between bhyve starting and the guest kernel
	// bringing its NIC up. ACPI presses during it are lost, as on real
	// hardware in early boot.
	BootDelay Duration `json:"boot_delay,omitempty"`
	// LoaderDelay is how long the guest stays in the bhyveload stage.
	LoaderDelay Duration `json:"loader_delay,omitempty"`
	// LockDelay is how long `vm _run` spends after "initialising" and before
	// vm::lock (network setup on a real host): the guest lists Stopped while
	// its _run is already under way.
	LockDelay Duration `json:"lock_delay,omitempty"`
	// SSHDelay is the time between the DHCP lease and sshd listening.
	SSHDelay Duration `json:"ssh_delay,omitempty"`
	// ShutdownDelay is how long an ACPI shutdown takes inside the guest.
	ShutdownDelay Duration `json:"shutdown_delay,omitempty"`
	// CloneDelay pauses `vm clone` between the zfs clones and the conf
	// rename: the window in which the clone is datasets without NAME.conf.
	CloneDelay Duration `json:"clone_delay,omitempty"`
	// NoDHCP: the guest never gets a lease (no lease row ever appears).
	NoDHCP bool `json:"no_dhcp,omitempty"`
	// NoSSHD: sshd never starts.
	NoSSHD bool `json:"no_sshd,omitempty"`
	// IgnoreACPI: the guest ignores ACPI power-button presses (vm stop).
	IgnoreACPI bool `json:"ignore_acpi,omitempty"`
	// LFCOnLease runs Kea's lease file cleanup as soon as the guest is bound.
	LFCOnLease bool `json:"lfc_on_lease,omitempty"`
	// Fail makes a vm subcommand fail with vm-bhyve's own message:
	// clone, clone-rename, start, _run, stop, poweroff, destroy.
	Fail string `json:"fail,omitempty"`
	// FailMessage overrides the default failure text where one is shown.
	FailMessage string `json:"fail_message,omitempty"`
	// FailTimes limits Fail to the next N invocations (0: always).
	FailTimes int `json:"fail_times,omitempty"`
	// RunLock leaves a run.lock behind: "stale" (this host's name), "empty",
	// or any other string as the foreign host name. It is written into new
	// clones, left behind when the VM stops, and written at once when set on
	// an existing stopped VM.
	RunLock string `json:"run_lock,omitempty"`
	// StealIP makes a running guest behave as a compromised job VM with
	// root that answers for another guest's address: it adds the address
	// to its NIC and announces it by gratuitous ARP, again and again.
	StealIP string `json:"steal_ip,omitempty"`
	// StealMAC makes a running guest take over another guest's MAC: its
	// NIC gets that MAC and announces it (with StealIP, for that address).
	StealMAC string `json:"steal_mac,omitempty"`
	// RecordSessions (read at boot) makes the guest's sshd record every
	// session's command and stdin in a file the host can read
	// (Config.SessionLog), as an attacker with root in the guest could.
	RecordSessions bool `json:"record_sessions,omitempty"`
}

// IsZero reports whether no knob is set.
func (f Fault) IsZero() bool { return f == Fault{} }

// Over returns f with every knob that o sets replaced by o's value.
func (f Fault) Over(o Fault) Fault {
	if o.BootDelay != 0 {
		f.BootDelay = o.BootDelay
	}
	if o.LoaderDelay != 0 {
		f.LoaderDelay = o.LoaderDelay
	}
	if o.LockDelay != 0 {
		f.LockDelay = o.LockDelay
	}
	if o.SSHDelay != 0 {
		f.SSHDelay = o.SSHDelay
	}
	if o.ShutdownDelay != 0 {
		f.ShutdownDelay = o.ShutdownDelay
	}
	if o.CloneDelay != 0 {
		f.CloneDelay = o.CloneDelay
	}
	f.NoDHCP = f.NoDHCP || o.NoDHCP
	f.NoSSHD = f.NoSSHD || o.NoSSHD
	f.IgnoreACPI = f.IgnoreACPI || o.IgnoreACPI
	f.LFCOnLease = f.LFCOnLease || o.LFCOnLease
	if o.Fail != "" {
		f.Fail, f.FailMessage, f.FailTimes = o.Fail, o.FailMessage, o.FailTimes
	}
	if o.RunLock != "" {
		f.RunLock = o.RunLock
	}
	if o.StealIP != "" {
		f.StealIP = o.StealIP
	}
	if o.StealMAC != "" {
		f.StealMAC = o.StealMAC
	}
	f.RecordSessions = f.RecordSessions || o.RecordSessions
	return f
}

// LockContent is what a RunLock knob puts into run.lock.
func (f Fault) LockContent(hostName string) (string, bool) {
	switch f.RunLock {
	case "":
		return "", false
	case "stale":
		return hostName + "\n", true
	case "empty":
		return "", true
	default:
		return f.RunLock + "\n", true
	}
}

func (c *Config) faultPath(name string) string {
	return filepath.Join(c.FaultDir(), name+".json")
}

// LoadFault reads the knobs stored for one name (zero if none).
func (c *Config) LoadFault(name string) (Fault, error) {
	var f Fault
	b, err := os.ReadFile(c.faultPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read fault knobs for %s: %w", name, err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("parse fault knobs for %s: %w", name, err)
	}
	return f, nil
}

// StoreFault replaces the knobs of one name; a zero Fault removes them.
func (c *Config) StoreFault(name string, f Fault) error {
	if err := os.MkdirAll(c.FaultDir(), 0o755); err != nil {
		return fmt.Errorf("store fault knobs: %w", err)
	}
	if f.IsZero() {
		if err := os.Remove(c.faultPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clear fault knobs for %s: %w", name, err)
		}
		return nil
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode fault knobs: %w", err)
	}
	return WriteFileAtomic(c.faultPath(name), append(b, '\n'), 0o644)
}

// EffectiveFault merges the knobs along a lineage given oldest ancestor
// first and the VM itself last.
func (c *Config) EffectiveFault(lineage []string) (Fault, error) {
	var eff Fault
	for _, n := range lineage {
		f, err := c.LoadFault(n)
		if err != nil {
			return eff, err
		}
		eff = eff.Over(f)
	}
	return eff, nil
}

// ConsumeFailure reports whether subcommand cmd must fail for a VM with the
// given lineage (oldest first), and with which message override. A limited
// FailTimes is counted down under a file lock, since parallel vm commands may
// race for the last failure.
func (c *Config) ConsumeFailure(cmd string, lineage []string) (bool, string, error) {
	for i := len(lineage) - 1; i >= 0; i-- {
		name := lineage[i]
		f, err := c.LoadFault(name)
		if err != nil {
			return false, "", err
		}
		if f.Fail == "" {
			continue
		}
		if f.Fail != cmd {
			// The nearest knob that sets Fail decides, like Over does.
			return false, "", nil
		}
		if f.FailTimes == 0 {
			return true, f.FailMessage, nil
		}
		return c.countDown(name, cmd)
	}
	return false, "", nil
}

func (c *Config) countDown(name, cmd string) (bool, string, error) {
	lock, err := os.OpenFile(filepath.Join(c.FaultDir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return false, "", fmt.Errorf("lock fault knobs: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return false, "", fmt.Errorf("lock fault knobs: %w", err)
	}
	f, err := c.LoadFault(name)
	if err != nil {
		return false, "", err
	}
	if f.Fail != cmd {
		return false, "", nil
	}
	msg := f.FailMessage
	f.FailTimes--
	if f.FailTimes <= 0 {
		f.Fail, f.FailMessage, f.FailTimes = "", "", 0
	}
	if err := c.StoreFault(name, f); err != nil {
		return false, "", err
	}
	return true, msg, nil
}
