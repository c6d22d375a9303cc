package vmbhyve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// DefaultPollInterval is how often WaitState and Stop run `vm list` when
// Driver.PollInterval is zero. vm list costs a few forks per guest, so this
// is short enough to notice a boot quickly without hammering the host.
const DefaultPollInterval = 100 * time.Millisecond

// Driver runs vm-bhyve commands. Set the exported fields, then use it from
// any number of goroutines; do not copy it after first use.
type Driver struct {
	// VM is the argv prefix of vm-bhyve, e.g. {"/usr/local/sbin/vm"}.
	VM []string
	// Sysrc is the argv prefix of sysrc(8), e.g. {"/usr/sbin/sysrc"}.
	Sysrc []string
	// ZFS is the argv prefix of zfs(8), which only removes partial clones
	// (DestroyPartialClone); empty means DefaultZFS.
	ZFS []string
	// Install and Rm are the argv prefixes of install(1) and rm(1), which
	// only write a clone's own cloud-init data (WriteCloudInit).
	Install []string
	Rm      []string
	// Privilege is prepended to VM, Sysrc, ZFS, Install and Rm: {"sudo", "-n"}, {"doas", "-n"}
	// or empty when the runner is root.
	Privilege []string
	// VMDir is the default datastore's directory (vm_dir's mountpoint): it
	// holds NAME/NAME.conf. Reading it needs no privilege.
	VMDir string
	// Cmd runs the commands; nil means ExecCommander{}.
	Cmd Commander
	// PollInterval is the pause between `vm list` polls (WaitState, Stop)
	// and between looks at a booting guest's vm-bhyve.log (Boot); zero
	// means DefaultPollInterval.
	PollInterval time.Duration
	// ListInterval is the longest pause between `vm list` runs while Boot
	// watches a guest; zero means DefaultListInterval.
	ListInterval time.Duration

	locks nameLocks

	startsMu sync.Mutex
	starts   map[string]startMark // guests Started whose `vm _run` may not have locked yet

	versionMu sync.Mutex
	version   *VersionInfo // vm-bhyve's, once SeedBuiltAtStart asked

	macMu    sync.Mutex
	reserved map[uint32]struct{} // MACs handed out by AllocateMAC, not yet released
	macBits  uint                // size of the MAC space in bits; 0 means 20 (tests shrink it)
	random   io.Reader           // nil means crypto/rand
}

func (d *Driver) commander() Commander {
	if d.Cmd == nil {
		return ExecCommander{}
	}
	return d.Cmd
}

func (d *Driver) pollInterval() time.Duration {
	if d.PollInterval <= 0 {
		return DefaultPollInterval
	}
	return d.PollInterval
}

// vm runs Privilege + VM + args and returns its stdout and stderr. Failures
// are a *CommandError, classified by vm-bhyve's message; setup problems
// (missing program, password prompt, vm-bhyve not enabled) come wrapped in a
// *failure.ConfigError because retrying cannot fix them.
func (d *Driver) vm(ctx context.Context, args ...string) (string, string, error) {
	if len(d.VM) == 0 {
		return "", "", failure.Configf("the vm command is not configured (expected e.g. /usr/local/sbin/vm)")
	}
	return d.run(ctx, d.VM[0], d.VM, args)
}

func (d *Driver) sysrc(ctx context.Context, args ...string) (string, string, error) {
	if len(d.Sysrc) == 0 {
		return "", "", failure.Configf("the sysrc command is not configured (expected e.g. /usr/sbin/sysrc)")
	}
	return d.run(ctx, d.Sysrc[0], d.Sysrc, args)
}

func (d *Driver) run(ctx context.Context, target string, prefix, args []string) (string, string, error) {
	argv := make([]string, 0, len(d.Privilege)+len(prefix)+len(args))
	argv = append(argv, d.Privilege...)
	argv = append(argv, prefix...)
	argv = append(argv, args...)
	if err := ctx.Err(); err != nil {
		return "", "", fmt.Errorf("%s: %w", formatArgv(argv), err)
	}
	stdout, stderr, err := d.commander().Run(ctx, argv)
	if err == nil {
		return string(stdout), string(stderr), nil
	}
	ce := &CommandError{Argv: argv, ExitCode: -1, Stdout: string(stdout), Stderr: string(stderr), Err: err}
	var exit interface{ ExitCode() int }
	if errors.As(err, &exit) {
		ce.ExitCode = exit.ExitCode()
	}
	if kind, hint := diagnoseSetup(d.Privilege, target, ce); kind != nil {
		ce.kind, ce.Hint = kind, hint
		return ce.Stdout, ce.Stderr, &failure.ConfigError{Err: ce}
	}
	ce.kind = classify(ce.Message())
	return ce.Stdout, ce.Stderr, ce
}

// List runs `vm list` and parses it (see ParseList).
func (d *Driver) List(ctx context.Context) ([]VM, error) {
	stdout, _, err := d.vm(ctx, "list")
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	vms, err := ParseList([]byte(stdout))
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	return vms, nil
}

// Get returns the `vm list` row for name, and whether there is one.
func (d *Driver) Get(ctx context.Context, name string) (VM, bool, error) {
	if name == "" {
		return VM{}, false, errors.New("get VM: empty name")
	}
	vms, err := d.List(ctx)
	if err != nil {
		return VM{}, false, err
	}
	for _, vm := range vms {
		if vm.Name == name {
			d.noteState(name, vm, true)
			return vm, true, nil
		}
	}
	d.noteState(name, VM{}, false)
	return VM{}, false, nil
}

// Clone runs `vm clone TEMPLATE@SNAPSHOT NAME`. The @SNAPSHOT form is the
// only one used: a bare clone (zfs::clone in lib/vm-zfs) takes a fresh
// snapshot of the template each time and never removes it, and refuses while
// the template runs. zfs::clone is silent on success and reports failures
// through util::err; a missing template or snapshot is a configuration error
// (ErrNotFound), a taken name is ErrExists. vm::generalise strips uuid and
// networkN_mac from the clone, which `vm _run` regenerates at first start
// unless SetConf writes them first.
func (d *Driver) Clone(ctx context.Context, template, snapshot, name string) error {
	if err := validTemplate(template); err != nil {
		return failure.Configf("clone: %w", err)
	}
	if err := validSnapshot(snapshot); err != nil {
		return failure.Configf("clone: %w", err)
	}
	if err := ValidName(name); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("clone %s@%s to %s: %w", template, snapshot, name, err)
	}
	defer unlock()
	if _, _, err := d.vm(ctx, "clone", template+"@"+snapshot, name); err != nil {
		err = fmt.Errorf("clone %s@%s to %s: %w", template, snapshot, name, err)
		if errors.Is(err, ErrNotFound) {
			return &failure.ConfigError{Err: err}
		}
		return err
	}
	return nil
}

// Start runs `vm start NAME`, which only launches `vm _run` in the background
// and returns. Its exit status proves nothing: up to 1.6 core::start returns
// 0 even when core::__start refused, and (even in 1.7+) the refusal reasons
// are on stdout as "  ! msg" lines. Any such line is a failure here, whatever
// the status. Success means vm-bhyve accepted the start, not that the guest
// boots: the caller polls WaitState, and must not Start the same VM again
// before it has seen the guest leave Stopped (vm-bhyve writes run.lock only
// after network setup, so an early second start would pass its check).
func (d *Driver) Start(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("start VM %s: %w", name, err)
	}
	defer unlock()
	// From here a `vm _run` may be on its way even if `vm start` fails or
	// is cancelled: core::__start launches it with `&` before returning,
	// and a SIGTERM to vm does not reach it.
	d.markStart(name)
	stdout, stderr, err := d.vm(ctx, "start", name)
	if err != nil {
		return fmt.Errorf("start VM %s: %w", name, err)
	}
	if msg := startFailures(stdout); msg != "" {
		ce := &CommandError{Argv: d.vmArgv("start", name), ExitCode: 0, Stdout: stdout, Stderr: stderr}
		ce.kind = classify(msg)
		return fmt.Errorf("start VM %s: %w", name, ce)
	}
	return nil
}

func (d *Driver) vmArgv(args ...string) []string {
	argv := append([]string{}, d.Privilege...)
	argv = append(argv, d.VM...)
	return append(argv, args...)
}

// WaitState polls `vm list` every PollInterval until ok(row, exists) holds,
// and returns that row. It gives up when ctx ends, with an error naming the
// last state seen; setup errors (which polling cannot fix) end it at once,
// other list failures are retried and reported if the wait times out.
func (d *Driver) WaitState(ctx context.Context, name string, ok func(vm VM, exists bool) bool) (VM, error) {
	last := "no successful vm list yet"
	var lastErr error
	ticker := time.NewTicker(d.pollInterval())
	defer ticker.Stop()
	for {
		vm, exists, err := d.Get(ctx, name)
		switch {
		case err == nil:
			if ok(vm, exists) {
				return vm, nil
			}
			lastErr = nil
			last = describe(vm, exists)
		case failure.KindOf(err) == failure.Config:
			return VM{}, fmt.Errorf("wait for VM %s: %w", name, err)
		case ctx.Err() == nil:
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return VM{}, fmt.Errorf("wait for VM %s: %w; last state seen: %s; last error: %w", name, ctx.Err(), last, lastErr)
			}
			return VM{}, fmt.Errorf("wait for VM %s: %w; last state seen: %s", name, ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

func describe(vm VM, exists bool) string {
	if !exists {
		return "not listed"
	}
	return vm.StateText
}

// InState is a WaitState predicate: the guest exists and is in one of states.
func InState(states ...State) func(VM, bool) bool {
	return func(vm VM, exists bool) bool {
		if !exists {
			return false
		}
		for _, s := range states {
			if vm.State == s {
				return true
			}
		}
		return false
	}
}

// Gone is a WaitState predicate: the guest is no longer listed.
func Gone(_ VM, exists bool) bool { return !exists }

// Stop shuts the guest down and waits until `vm list` shows it Stopped (or
// Suspended) with no run.lock, which `vm _run` removes only after destroying
// the taps and /dev/vmm/NAME (vm::run in lib/vm-run).
//
// A running guest first gets `vm stop NAME` (core::stop): two SIGTERMs to
// bhyve, i.e. ACPI power button presses; the command is asynchronous and
// exits 0 even when it did nothing. Then up to acpiTimeout for the guest to
// go; guests ignoring ACPI never do. Then (or at once when acpiTimeout <= 0,
// or when the guest is not Running yet) forceStop: `vm poweroff -f NAME`
// (core::poweroff, bhyvectl --force-poweroff) for bhyve, `vm stop` for a
// loader, which poweroff cannot end, and a wait until ctx ends.
//
// A guest this Driver has just started is not taken as stopped while its
// `vm _run` may still be on the way to vm::lock (see startSettled): Stop
// waits for it and stops what it starts. Otherwise a guest already stopped
// is success; a guest that is not listed is an error wrapping ErrNotFound.
// If the guest never stops (e.g. a stale run.lock keeps it Locked) the
// error names the last state seen.
func (d *Driver) Stop(ctx context.Context, name string, acpiTimeout time.Duration) error {
	_, err := d.stop(ctx, name, acpiTimeout)
	return err
}

// ErrPoweredOff means a guest did not shut down through ACPI within the
// timeout and was powered off: its file systems were not unmounted.
var ErrPoweredOff = errors.New("did not shut down through ACPI in time and was powered off")

// ShutDown is Stop for a guest whose disk is snapshotted next (a
// template): the guest is stopped in any case, but a forced poweroff is an
// error wrapping ErrPoweredOff, because its disk is not clean.
func (d *Driver) ShutDown(ctx context.Context, name string, acpiTimeout time.Duration) error {
	if acpiTimeout <= 0 {
		return fmt.Errorf("shut down VM %s: an ACPI timeout is needed, got %s", name, acpiTimeout)
	}
	forced, err := d.stop(ctx, name, acpiTimeout)
	if err == nil && forced {
		err = fmt.Errorf("shut down VM %s: %w after %s", name, ErrPoweredOff, acpiTimeout)
	}
	return err
}

// stop is Stop, also reporting whether `vm poweroff` was needed.
func (d *Driver) stop(ctx context.Context, name string, acpiTimeout time.Duration) (forced bool, _ error) {
	if err := ValidName(name); err != nil {
		return false, fmt.Errorf("stop: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return false, fmt.Errorf("stop VM %s: %w", name, err)
	}
	defer unlock()

	vm, exists, err := d.Get(ctx, name)
	if err != nil {
		return false, fmt.Errorf("stop VM %s: %w", name, err)
	}
	if !exists {
		return false, fmt.Errorf("stop VM %s: %w", name, ErrNotFound)
	}
	if vm.Stopped() && d.startSettled(name) {
		return false, nil
	}
	stopped := func(vm VM, exists bool) bool { return !exists || vm.Stopped() && d.startSettled(name) }

	if acpiTimeout > 0 && vm.State == StateRunning {
		// core::stop warns (exit 0) when there is no vmm yet; nothing to
		// act on, the wait below decides.
		if _, _, err := d.vm(ctx, "stop", name); err != nil && failure.KindOf(err) == failure.Config {
			return false, fmt.Errorf("stop VM %s: %w", name, err)
		}
		acpiCtx, cancel := context.WithTimeout(ctx, acpiTimeout)
		vm, err := d.WaitState(acpiCtx, name, stopped)
		cancel()
		if err == nil {
			return false, goneIsNotFound(name, vm)
		}
		if ctx.Err() != nil || failure.KindOf(err) == failure.Config {
			return false, fmt.Errorf("stop VM %s: ACPI shutdown: %w", name, err)
		}
		return d.forceStop(ctx, name, stopped, nil)
	}
	return d.forceStop(ctx, name, stopped, &vm)
}

// forceStop ends the guest in whatever stage it is, acting again whenever
// it moves on, until stopped holds or ctx ends. A guest caught while `vm
// _run` starts it goes through stages that each need their own action:
//   - Stopped before vm::lock (lib/vm-run writes run.lock only after the
//     network): nothing to act on yet; stopped decides whether _run is done.
//   - Locked: _run holds run.lock but no loader or bhyve runs (between
//     stages, or tearing down); nothing to signal, wait.
//   - Bootloader: core::poweroff cannot end the loader, there is no bhyve
//     to force off (vm-bhyve #466); core::stop kills the loader (its prompt
//     is answered yes by stdin at EOF), and _run then gives up.
//   - Running: core::poweroff (bhyvectl --force-poweroff).
//
// It reports whether a poweroff was sent. first, if not nil, is a fresh
// `vm list` row of the guest, acted on without listing again.
func (d *Driver) forceStop(ctx context.Context, name string, stopped func(VM, bool) bool, first *VM) (forced bool, _ error) {
	last := "no successful vm list yet"
	acted := map[State]int{} // the PID each stage was last acted on
	ticker := time.NewTicker(d.pollInterval())
	defer ticker.Stop()
	for {
		var vm VM
		var exists bool
		var err error
		if first != nil {
			vm, exists, first = *first, true, nil
		} else {
			vm, exists, err = d.Get(ctx, name)
		}
		switch {
		case err == nil && stopped(vm, exists):
			if !exists {
				return forced, goneIsNotFound(name, vm)
			}
			return forced, nil
		case err == nil:
			last = describe(vm, exists)
			if pid, done := acted[vm.State]; done && pid == vm.PID {
				break
			}
			switch vm.State {
			case StateBootloader:
				acted[vm.State] = vm.PID
				if _, _, err := d.vm(ctx, "stop", name); err != nil && failure.KindOf(err) == failure.Config {
					return forced, fmt.Errorf("stop VM %s: %w", name, err)
				}
			case StateRunning:
				acted[vm.State] = vm.PID
				forced = true
				if _, _, err := d.vm(ctx, "poweroff", "-f", name); err != nil && !errors.Is(err, ErrNotRunning) {
					// ErrNotRunning means the guest went away between the
					// poll and poweroff. Anything else: look once more
					// before giving up.
					if vm, exists, gerr := d.Get(ctx, name); gerr == nil && stopped(vm, exists) {
						return forced, goneIsNotFound(name, vm)
					}
					return forced, fmt.Errorf("stop VM %s: poweroff: %w", name, err)
				}
			}
		case failure.KindOf(err) == failure.Config:
			return forced, fmt.Errorf("stop VM %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return forced, fmt.Errorf("stop VM %s: %w; last state seen: %s", name, ctx.Err(), last)
		case <-ticker.C:
		}
	}
}

// goneIsNotFound turns the zero VM that WaitState returns for a guest that
// vanished while stopping into ErrNotFound; someone else destroyed it.
func goneIsNotFound(name string, vm VM) error {
	if vm.Name == "" {
		return fmt.Errorf("stop VM %s: %w (it disappeared while stopping)", name, ErrNotFound)
	}
	return nil
}

// Destroy runs `vm destroy -f NAME` (core::destroy): -f because without it
// util::confirm would read stdin, and EOF there means yes anyway. A guest
// that no longer exists gives an error wrapping ErrNotFound, so callers that
// only want it gone check errors.Is(err, ErrNotFound). vm::confirm_stopped
// refuses a running or locked guest (ErrBusy, message quoted), and ZFS
// refuses a dataset that has dependent clones ("failed to destroy ZFS
// dataset ..."); neither removes anything.
func (d *Driver) Destroy(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("destroy VM %s: %w", name, err)
	}
	defer unlock()
	if _, _, err := d.vm(ctx, "destroy", "-f", name); err != nil {
		return fmt.Errorf("destroy VM %s: %w", name, err)
	}
	return nil
}

// Version runs `vm version` (util::version in lib/vm-util, answered before
// any root check) and returns the version, e.g. "1.6-devel" or "1.7.5"; see
// ParseVersion for what it can and cannot tell.
func (d *Driver) Version(ctx context.Context) (string, error) {
	stdout, _, err := d.vm(ctx, "version")
	if err != nil {
		return "", fmt.Errorf("vm version: %w", err)
	}
	v, err := ParseVersion(stdout)
	if err != nil {
		return "", fmt.Errorf("vm version: %w", err)
	}
	return v.String(), nil
}

// startSettle is how long a guest may list Stopped after Start, with
// nothing new in its vm-bhyve.log, before Stop believes that no `vm _run`
// is coming: vm::run logs "initialising" before any slow step, so on a
// real host the line follows `vm start` within milliseconds.
const startSettle = 3 * time.Second

// startMark is one Start whose `vm _run` has not been seen locking.
type startMark struct {
	at  time.Time
	log bootLog // the guest's vm-bhyve.log from before the start
}

func (d *Driver) markStart(name string) {
	m := startMark{at: time.Now(), log: bootLog{path: filepath.Join(d.VMDir, name, "vm-bhyve.log")}}
	m.log.skipExisting()
	d.startsMu.Lock()
	defer d.startsMu.Unlock()
	if d.starts == nil {
		d.starts = map[string]startMark{}
	}
	d.starts[name] = m
}

// noteState forgets a start once `vm list` shows its _run past vm::lock
// (any state but Stopped) or the guest gone: from then on Stopped means
// that _run has unlocked, i.e. finished.
func (d *Driver) noteState(name string, vm VM, exists bool) {
	if exists && vm.Stopped() {
		return
	}
	d.startsMu.Lock()
	delete(d.starts, name)
	d.startsMu.Unlock()
}

// startSettled reports whether a guest listed Stopped is really at rest.
// After `vm start` it lists Stopped until vm::lock, which vm::run (lib/
// vm-run) reaches only after network setup; a Stopped seen then is not
// final: the guest boots a moment later, and `vm destroy` meanwhile would
// pull its datasets from under a running `_run`. It is at rest once the
// start's log lines end ("fatal; ..." or "stopped": _run gave up or
// finished), or when startSettle passed without a single line (no _run
// came: `vm start` refused or was killed before launching it).
func (d *Driver) startSettled(name string) bool {
	d.startsMu.Lock()
	defer d.startsMu.Unlock()
	m, ok := d.starts[name]
	if !ok {
		return true
	}
	m.log.read()
	d.starts[name] = m
	if m.log.ended || len(m.log.lines) == 0 && time.Since(m.at) >= startSettle {
		delete(d.starts, name)
		return true
	}
	return false
}
