package sim

import (
	"errors"
	"io/fs"
	"os"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/host"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// Subcommands a Fault can make fail, each with vm-bhyve's own message.
const (
	// FailClone: `zfs clone` fails: zfs's complaint, then
	// "$0: ERROR: error while cloning dataset DS@SNAP", exit 1.
	FailClone = "clone"
	// FailCloneRename: the clone is made but NAME.conf cannot be renamed:
	// three lines on stdout, exit 1, datasets left behind (a partial clone).
	FailCloneRename = "clone-rename"
	// FailStart: "  ! MESSAGE" on stdout; exit 0 in 1.6 mode, 1 in 1.7+.
	FailStart = "start"
	// FailRun: `vm start` succeeds but the background _run fails in the
	// loader ("fatal; loader returned error 1" in vm-bhyve.log).
	FailRun = "_run"
	// FailStop: `vm stop` warns "unable to locate process id" and does
	// nothing.
	FailStop = "stop"
	// FailPoweroff: bhyvectl --force-poweroff fails (exit 1).
	FailPoweroff = "poweroff"
	// FailDestroy: "$0: ERROR: failed to destroy ZFS dataset DS", exit 1,
	// nothing removed.
	FailDestroy = "destroy"
)

// RunLock values of Fault.
const (
	// LockStale leaves a run.lock naming this host.
	LockStale = "stale"
	// LockEmpty leaves an empty run.lock (blocks start, vm-bhyve#555).
	LockEmpty = "empty"
)

// Fault holds the knobs of one VM or template name. Knobs of a template
// apply to its clones (through the ZFS clone origin) and a clone's own knobs
// win. Knobs are stored outside the VM tree, so setting them on a template
// after it was snapshotted still reaches new clones.
type Fault struct {
	// BootDelay: time from bhyve start to the guest's NIC coming up. ACPI
	// presses (vm stop) during it are lost.
	BootDelay time.Duration
	// LoaderDelay: time in the bhyveload stage ("Bootloader (pid)"); 150ms
	// when zero.
	LoaderDelay time.Duration
	// LockDelay: time `vm _run` spends between "initialising" and writing
	// run.lock (network setup); the guest lists Stopped meanwhile.
	LockDelay time.Duration
	// SSHDelay: time between the DHCP lease and sshd listening.
	SSHDelay time.Duration
	// ShutdownDelay: how long an ACPI shutdown takes; 1.5s when zero.
	ShutdownDelay time.Duration
	// CloneDelay: `vm clone` pauses after creating the new datasets and
	// before renaming the conf (set on the template or on the new name).
	CloneDelay time.Duration
	// NoDHCP: the guest never asks for a lease.
	NoDHCP bool
	// NoSSHD: sshd never starts.
	NoSSHD bool
	// IgnoreACPI: vm stop has no effect (takes effect on running guests).
	IgnoreACPI bool
	// LFCOnLease: Kea runs its lease file cleanup right after the guest got
	// its lease, so the lease is only in .1/.2 when the executor looks.
	LFCOnLease bool
	// Fail names a vm subcommand that fails (FailClone, FailStart, ...).
	Fail string
	// FailMessage replaces the default message where one is printed.
	FailMessage string
	// FailTimes limits Fail to the next N invocations (0: always).
	FailTimes int
	// RunLock leaves a run.lock behind: LockStale, LockEmpty or a foreign
	// host name. New clones get it, a stopping guest leaves it, and an
	// existing stopped VM gets it at once.
	RunLock string
	// StealIP (set on a running guest, applied within 50ms): the guest acts
	// as a compromised job VM with root that answers for another guest's
	// address: adds it to its NIC and keeps announcing it by gratuitous ARP.
	StealIP string
	// StealMAC (set on a running guest): the guest takes over another
	// guest's MAC and keeps announcing it (use with StealIP for the
	// victim's address).
	StealMAC string
	// RecordSessions (read at boot; set it on the template for every
	// clone): the guest's sshd records each session's command and stdin,
	// read back with Host.SessionLog.
	RecordSessions bool
}

func (f Fault) internal() simstate.Fault {
	return simstate.Fault{
		BootDelay:      simstate.Duration(f.BootDelay),
		LoaderDelay:    simstate.Duration(f.LoaderDelay),
		LockDelay:      simstate.Duration(f.LockDelay),
		SSHDelay:       simstate.Duration(f.SSHDelay),
		ShutdownDelay:  simstate.Duration(f.ShutdownDelay),
		CloneDelay:     simstate.Duration(f.CloneDelay),
		NoDHCP:         f.NoDHCP,
		NoSSHD:         f.NoSSHD,
		IgnoreACPI:     f.IgnoreACPI,
		LFCOnLease:     f.LFCOnLease,
		Fail:           f.Fail,
		FailMessage:    f.FailMessage,
		FailTimes:      f.FailTimes,
		RunLock:        f.RunLock,
		StealIP:        f.StealIP,
		StealMAC:       f.StealMAC,
		RecordSessions: f.RecordSessions,
	}
}

func fromInternal(f simstate.Fault) Fault {
	return Fault{
		BootDelay:      time.Duration(f.BootDelay),
		LoaderDelay:    time.Duration(f.LoaderDelay),
		LockDelay:      time.Duration(f.LockDelay),
		SSHDelay:       time.Duration(f.SSHDelay),
		ShutdownDelay:  time.Duration(f.ShutdownDelay),
		CloneDelay:     time.Duration(f.CloneDelay),
		NoDHCP:         f.NoDHCP,
		NoSSHD:         f.NoSSHD,
		IgnoreACPI:     f.IgnoreACPI,
		LFCOnLease:     f.LFCOnLease,
		Fail:           f.Fail,
		FailMessage:    f.FailMessage,
		FailTimes:      f.FailTimes,
		RunLock:        f.RunLock,
		StealIP:        f.StealIP,
		StealMAC:       f.StealMAC,
		RecordSessions: f.RecordSessions,
	}
}

// SessionLog returns what the guest VM name recorded of the SSH sessions
// it accepted (RecordSessions), "" when it recorded none.
func (h *Host) SessionLog(name string) (string, error) {
	b, err := os.ReadFile(h.cfg.SessionLog(name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// SetFault replaces the knobs of a VM or template name; the zero Fault
// clears them.
func (h *Host) SetFault(name string, f Fault) error { return host.SetFault(h.cfg, name, f.internal()) }

// Fault returns the knobs stored for a name (not the inherited ones).
func (h *Host) Fault(name string) (Fault, error) {
	f, err := h.cfg.LoadFault(name)
	return fromInternal(f), err
}
