// Package jobvm is the life of one CI job's VM, shared by the native executor
// and bhyve-executor: clone the template, give the clone a MAC and an
// ownership marker, start it, wait until vm-bhyve runs it, find its address in
// the DHCP leases, wait for SSH, run the job's stages, and destroy it whatever
// happened. This file reads top to bottom in that order.
package jobvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Hypervisor is what the lifecycle needs from vm-bhyve (helpers/vmbhyve.Driver).
type Hypervisor interface {
	List(ctx context.Context) ([]vmbhyve.VM, error)
	Clone(ctx context.Context, template, snapshot, name string) error
	PartialClones(prefix string) ([]vmbhyve.PartialClone, error)
	DestroyPartialClone(ctx context.Context, name string) error
	// ResolveSnapshot maps the settings' snapshot onto the one to clone
	// ("latest": the template's newest build snapshot at this moment).
	ResolveSnapshot(template, snapshot string) (string, error)
	AllocateMAC(ctx context.Context) (net.HardwareAddr, func(), error)
	SetConf(ctx context.Context, name string, kv ...string) error
	ReadConf(name string) (map[string]string, error)
	// Boot starts the VM and waits until vm-bhyve runs it; a guest that
	// stops first is a *vmbhyve.BootError.
	Boot(ctx context.Context, name string) (vmbhyve.VM, error)
	Stop(ctx context.Context, name string, acpiTimeout time.Duration) error
	Destroy(ctx context.Context, name string) error
}

// Addresses finds the IPv4 address DHCP gave a MAC.
type Addresses interface {
	WaitAddress(ctx context.Context, mac net.HardwareAddr) (Address, error)
}

// Address is a guest's address and where it was found, for the job log.
type Address struct {
	IP     netip.Addr
	Source string // e.g. "/var/db/kea/kea-leases4.csv line 1042"
}

// Connector opens the job's SSH connection to a guest, verifying the host
// key pin says.
type Connector interface {
	Connect(ctx context.Context, addr netip.Addr, pin HostKeyPin) (Conn, error)
}

// Conn is one job's SSH connection; each stage is one session.
type Conn interface {
	Run(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) error
	// Ping is one round trip on the connection, proving the guest answers.
	Ping(ctx context.Context) error
	Close() error
}

// Phase names the steps of bringing a VM up and down, for the job log, the
// executor stage and the metrics.
type Phase string

const (
	PhaseClone    Phase = "clone"
	PhaseBoot     Phase = "boot"
	PhaseAddress  Phase = "address"
	PhaseSSH      Phase = "ssh"
	PhasePowerOff Phase = "poweroff"
	PhaseDestroy  Phase = "destroy"
)

// Observer is told about phases as they happen. Nil-safe: see observe.
type Observer interface {
	PhaseStarted(vm string, p Phase)
	PhaseDone(vm string, p Phase, took time.Duration, err error)
}

// Config is what one job's lifecycle needs from the settings.
type Config struct {
	Template    string
	Snapshot    string
	NamePrefix  string
	Shell       string        // command line the stage script is piped to
	BootTimeout time.Duration // vm start -> SSH ready
	// Resources is the job's request, Limits the operator's bounds, and
	// AdmissionWait how long a VM may wait for host memory (0: refuse at
	// once); see resources.go.
	Resources     Resources
	Limits        Limits
	AdmissionWait time.Duration
	HostKeys      string // settings.HostKeys*; "" means auto
}

// Job identifies the CI job a VM is for.
type Job struct {
	ID   int64
	Slot int
}

// Manager creates, runs and destroys job VMs for one runner. One Manager may
// serve many concurrent jobs.
type Manager struct {
	VMs    Hypervisor
	Seeds  Seeds // nil: every VM keeps its template's host key
	Leases Addresses
	SSH    Connector
	Owner  Owner
	// Net binds each VM's address and MAC to its tap; nil: isolation off.
	Net      Network
	Holder   Holder
	Config   Config
	Observer Observer
	Now      func() time.Time
	// Memory reads the host's free memory for admission; nil admits all.
	Memory MemoryGauge

	// Held is the set of VM names this process is using; a sweep never
	// touches them.
	Held *HeldSet
	// HolderIsSelf says Holder is this very process (the native executor),
	// so Held is the complete truth about which of Holder's VMs are in use.
	// bhyve-executor records its parent, gitlab-runner, whose other jobs'
	// VMs this process knows nothing about.
	HolderIsSelf bool
}

// Logf writes a line to the job log.
type Logf func(format string, args ...any)

// VM is one running job VM.
type VM struct {
	Name     string
	Template string
	// Snapshot is the template's snapshot the VM was cloned from, with
	// "latest" resolved ("" for a VM reattached by Attach).
	Snapshot string
	MAC      net.HardwareAddr
	Address  Address
	// HostKey is the key generated for this VM; nil means the template's
	// pinned key identifies it.
	HostKey ssh.PublicKey
	Timings []Timing
	// Shell is the command line stage scripts are piped to; it starts as the
	// Manager's and a front-end may set its own (upstream's generated
	// BuildShell) before the first stage.
	Shell string

	m        *Manager
	mu       sync.Mutex
	conn     Conn
	closed   bool // no more stages: the connection is closed or closing
	detached bool // left running for another process; Close does nothing
	gone     bool // destroyed
}

// Timing is how long one phase took.
type Timing struct {
	Phase Phase
	Took  time.Duration
}

// Create brings up a fresh VM for job from the configured template. On any
// failure, the VM is destroyed before Create returns: a failed prepare never
// leaves a VM behind.
func (m *Manager) Create(ctx context.Context, job Job, logf Logf) (*VM, error) {
	name := JobVMName(m.Config.NamePrefix, m.Owner.Runner, job.ID, job.Slot)
	// The caller's cancellation may be why the VM goes: destroying it must
	// not depend on it.
	return m.CreateNamed(ctx, context.WithoutCancel(ctx), name, job.ID, logf)
}

// CreateNamed is Create for VMs that serve no particular job yet (jobID 0):
// warm-pool VMs and doctor's test boot. The name must start with the
// configured prefix, or sweeps would never find the VM.
//
// cleanup bounds the destroy of a VM whose create failed or was cancelled
// (on top of destroyBudget): a pool passes what ends when its Shutdown gives
// up, so an abandoned boot does not outlive Shutdown's deadline. A VM left
// that way comes back in an error that is a *LeftBehindError.
func (m *Manager) CreateNamed(ctx, cleanup context.Context, name string, jobID int64, logf Logf) (_ *VM, err error) {
	if !strings.HasPrefix(name, m.Config.NamePrefix) {
		return nil, fmt.Errorf("VM name %q does not start with name_prefix %q", name, m.Config.NamePrefix)
	}
	if err := vmbhyve.ValidName(name); err != nil {
		return nil, fmt.Errorf("VM name %q built from name_prefix and runner name is not valid for vm-bhyve: %w", name, err)
	}
	if err := m.replaceLeftover(ctx, name, jobID, logf); err != nil {
		return nil, err
	}
	size, err := m.sizeAndAdmit(ctx, logf)
	if err != nil {
		return nil, err
	}

	m.Held.Add(name)
	v := &VM{Name: name, Template: m.Config.Template, Shell: m.Config.Shell, m: m}
	cloned := false
	defer func() {
		if err == nil {
			return
		}
		if cloned {
			dctx, cancel := context.WithTimeout(cleanup, m.destroyBudget())
			defer cancel()
			if derr := v.destroy(dctx); derr != nil {
				err = fmt.Errorf("%w (and destroying %s failed too: %w)", err, name, &LeftBehindError{Name: name, Err: derr})
			}
		}
		m.Held.Remove(name)
	}()

	// Clone. vm-bhyve's bare `vm clone TMPL NEW` leaves a snapshot behind per
	// clone, so we always clone from the named snapshot. A missing template
	// or snapshot comes back as a configuration error.
	//
	// zfs::clone makes the datasets before it renames the conf, so a clone
	// interrupted in between leaves datasets that vm-bhyve cannot see or
	// destroy. The clone therefore never sees the job's cancellation: it
	// runs to its end within its own bound, and a cancel that came
	// meanwhile is honoured afterwards by destroying the finished clone.
	//
	// The snapshot is resolved per job: a rotation switches the next clone
	// to the new snapshot while running jobs keep theirs.
	snap, err := m.VMs.ResolveSnapshot(m.Config.Template, m.Config.Snapshot)
	if err != nil {
		return nil, &failure.ConfigError{Err: err}
	}
	v.Snapshot = snap
	logf("Cloning %s@%s as %s", m.Config.Template, snap, name)
	cloneCtx, cancelClone := context.WithTimeout(context.WithoutCancel(ctx), cloneBudget)
	err = m.phase(v, PhaseClone, func() error {
		return m.VMs.Clone(cloneCtx, m.Config.Template, snap, name)
	})
	cancelClone()
	if err != nil {
		if !errors.Is(err, vmbhyve.ErrExists) {
			// A clone that failed half-way (vm-bhyve rolls nothing back)
			// is ours: the name was free when it started.
			if perr := m.removePartialClone(ctx, name, logf); perr != nil {
				err = fmt.Errorf("%w (and removing what it left failed too: %v)", err, perr)
			}
		}
		return nil, err
	}
	cloned = true
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cancelled while cloning %s: %w", name, err)
	}

	// Address and ownership. vm-bhyve assigns a MAC asynchronously on first
	// start, so a lookup could race it; our own unique MAC, written before
	// start, removes the race. The marker makes the VM provably ours.
	mac, release, err := m.VMs.AllocateMAC(ctx)
	if err != nil {
		return nil, fmt.Errorf("allocate a MAC address for %s: %w", name, err)
	}
	err = m.VMs.SetConf(ctx, name,
		keyMAC+"="+mac.String(),
		keyOwner+"="+m.Owner.ID(),
		keyRunner+"="+slug(m.Owner.Runner, 64),
		keyJob+"="+strconv.FormatInt(jobID, 10),
		keyHolder+"="+string(m.Holder),
		keyCreated+"="+strconv.FormatInt(m.now().Unix(), 10),
	)
	release()
	if err != nil {
		return nil, fmt.Errorf("write MAC and ownership marker into %s's config: %w", name, err)
	}
	v.MAC = mac
	if err := m.writeSize(ctx, name, size); err != nil {
		return nil, err
	}

	// Host key (hostkey.go): the clone's own, in its cloud-init data.
	if err := m.hostKey(ctx, v, logf); err != nil {
		return nil, err
	}

	// Everything from `vm start` to an SSH session shares one deadline: an
	// operator thinks in "how long may a boot take", not per step.
	bootCtx, cancel := context.WithTimeout(ctx, m.Config.BootTimeout)
	defer cancel()

	logf("Starting %s (MAC %s)", name, mac)
	if err := m.phase(v, PhaseBoot, func() error { return m.boot(bootCtx, name, logf) }); err != nil {
		return nil, m.bootErr(ctx, bootCtx, "start", err)
	}

	if err := m.phase(v, PhaseAddress, func() error {
		a, err := m.Leases.WaitAddress(bootCtx, mac)
		v.Address = a
		return err
	}); err != nil {
		return nil, m.bootErr(ctx, bootCtx, "get a DHCP lease", err)
	}
	logf("%s has address %s (%s)", name, v.Address.IP, v.Address.Source)

	// Bind: the address and MAC belong to this VM's tap before the first
	// connection, so nothing else on the switch can answer in its place.
	if err := m.bind(bootCtx, v, logf); err != nil {
		return nil, m.bootErr(ctx, bootCtx, "get bound to its tap", err)
	}

	if err := m.phase(v, PhaseSSH, func() error {
		c, err := m.SSH.Connect(bootCtx, v.Address.IP, v.pin())
		v.conn = c
		return err
	}); err != nil {
		return nil, m.bootErr(ctx, bootCtx, "accept SSH", err)
	}
	logf("%s is ready: %s", name, v.timingSummary())
	return v, nil
}

// replaceLeftover deals with a VM that already has the name we want. If a
// previous attempt for the same job left it (upstream retries a failed
// prepare), it is ours and goes; anything else is not ours and stays.
func (m *Manager) replaceLeftover(ctx context.Context, name string, jobID int64, logf Logf) error {
	conf, err := m.VMs.ReadConf(name)
	if err != nil {
		if errors.Is(err, vmbhyve.ErrNotFound) {
			// Datasets without a conf under this exact name are a clone an
			// earlier attempt did not finish; `vm clone` would refuse them.
			return m.removePartialClone(ctx, name, logf)
		}
		return fmt.Errorf("check whether %s already exists: %w", name, err)
	}
	mk, ok := readMarker(conf)
	if !ok || mk.owner != m.Owner.ID() || mk.job != jobID {
		return fmt.Errorf("a VM named %s already exists and was not created by this runner for job %d; it is left untouched, remove or rename it to free the name", name, jobID)
	}
	logf("Destroying %s left over from an earlier attempt at this job", name)
	dctx, cancel := context.WithTimeout(ctx, m.destroyBudget())
	defer cancel()
	return m.stopAndDestroy(dctx, name)
}

// cloneBudget bounds one `vm clone`, which runs detached from the job's
// context: a ZFS clone takes seconds.
const cloneBudget = 2 * time.Minute

// removePartialClone destroys name's datasets if `vm clone` left them
// without a conf. Nothing there is not an error.
func (m *Manager) removePartialClone(ctx context.Context, name string, logf Logf) error {
	partial, err := m.VMs.PartialClones(name)
	if err != nil {
		return fmt.Errorf("check for a partial clone named %s: %w", name, err)
	}
	for _, p := range partial {
		if p.Name != name {
			continue
		}
		logf("Destroying the partial clone %s (datasets without %s.conf) left by an unfinished vm clone", name, name)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.destroyBudget())
		defer cancel()
		return m.VMs.DestroyPartialClone(dctx, name)
	}
	return nil
}

// boot starts the VM and waits until vm-bhyve runs it. If it stopped
// instead, what vm-bhyve wrote in its vm-bhyve.log goes to the job log now:
// destroying the VM removes the file.
func (m *Manager) boot(ctx context.Context, name string, logf Logf) error {
	_, err := m.VMs.Boot(ctx, name)
	var be *vmbhyve.BootError
	if errors.As(err, &be) && len(be.Log) > 0 {
		logf("%s/vm-bhyve.log:\n  %s", name, strings.Join(be.Log, "\n  "))
	}
	return err
}

// bootErr says which deadline ended a boot phase: ours (boot_timeout, a
// system failure worth retrying) or the caller's (job cancelled).
func (m *Manager) bootErr(ctx, bootCtx context.Context, what string, err error) error {
	if ctx.Err() == nil && errors.Is(bootCtx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("VM did not %s within boot_timeout %s: %w", what, m.Config.BootTimeout, err)
	}
	return fmt.Errorf("VM did not %s: %w", what, err)
}

// Run runs one stage script in the VM: the script on stdin of the configured
// shell, output streamed as it comes. A non-zero exit is a
// *failure.ScriptError; a lost connection is a system failure.
func (v *VM) Run(ctx context.Context, script io.Reader, stdout, stderr io.Writer) error {
	v.mu.Lock()
	conn, closed := v.conn, v.closed
	v.mu.Unlock()
	if closed || conn == nil {
		return fmt.Errorf("VM %s is not connected", v.Name)
	}
	return conn.Run(ctx, v.Shell, script, stdout, stderr)
}

// Ping checks, in one round trip, that the VM's SSH connection still works;
// a warm pool calls it before handing an idle VM to a job.
func (v *VM) Ping(ctx context.Context) error {
	v.mu.Lock()
	conn, closed := v.conn, v.closed
	v.mu.Unlock()
	if closed || conn == nil {
		return fmt.Errorf("VM %s is not connected", v.Name)
	}
	return conn.Ping(ctx)
}

// Attach reconnects to a VM that Create brought up earlier, possibly in
// another process: bhyve-executor runs every stage as a separate process. The
// VM must carry this runner's marker.
func (m *Manager) Attach(ctx context.Context, name string, addr netip.Addr) (*VM, error) {
	conf, err := m.VMs.ReadConf(name)
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w", name, err)
	}
	if mk, ok := readMarker(conf); !ok || mk.owner != m.Owner.ID() {
		return nil, fmt.Errorf("attach to %s: it carries no ownership marker of this runner", name)
	}
	mac, _ := net.ParseMAC(conf[keyMAC])
	key, err := hostKeyFromConf(conf)
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w", name, err)
	}
	v := &VM{Name: name, Template: m.Config.Template, Shell: m.Config.Shell, MAC: mac, Address: Address{IP: addr}, HostKey: key, m: m}
	if err := m.phase(v, PhaseSSH, func() error {
		c, err := m.SSH.Connect(ctx, addr, v.pin())
		v.conn = c
		return err
	}); err != nil {
		return nil, fmt.Errorf("reconnect to %s at %s: %w", name, addr, err)
	}
	return v, nil
}

// Detach closes the SSH connection and leaves the VM running for a later
// Attach or Destroy. After Detach, Close does nothing.
func (v *VM) Detach() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed, v.detached = true, true
	v.mu.Unlock()
	return v.closeConn()
}

// PowerOff closes the SSH connection and powers the VM off at once (`vm
// poweroff -f`), leaving it for Close to destroy. Once it returns the guest
// can run nothing: its bhyve process is gone. That is all a job must wait
// for; the destroy may come later.
func (v *VM) PowerOff(ctx context.Context) error {
	if !v.endStages() {
		return nil
	}
	_ = v.closeConn()
	return v.m.phase(v, PhasePowerOff, func() error { return v.m.powerOff(ctx, v.Name) })
}

// Close closes the SSH connection, then powers off and destroys the VM. It
// is idempotent, retries a destroy that failed, and is safe to call on a VM
// whose Create failed half-way.
func (v *VM) Close(ctx context.Context) error {
	if !v.endStages() {
		return nil
	}
	return v.destroy(ctx)
}

// endStages refuses further stages and reports whether the VM is still
// there for this process to end: not destroyed, not detached.
func (v *VM) endStages() bool {
	if v == nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.detached || v.gone {
		return false
	}
	v.closed = true
	return true
}

func (v *VM) closeConn() error {
	v.mu.Lock()
	conn := v.conn
	v.conn = nil
	v.mu.Unlock()
	if conn != nil {
		return conn.Close()
	}
	return nil
}

func (v *VM) destroy(ctx context.Context) error {
	_ = v.closeConn()
	err := v.m.phase(v, PhaseDestroy, func() error { return v.m.stopAndDestroy(ctx, v.Name) })
	if err != nil {
		// Still held: the caller retries (the warm pool's destroys do), and
		// a sweep must not destroy it at the same time.
		return err
	}
	v.mu.Lock()
	v.gone = true
	v.mu.Unlock()
	v.m.Held.Remove(v.Name)
	return nil
}

// Destroy stops and destroys a VM by name, but only if its marker proves this
// runner created it. A VM that is already gone is not an error.
func (m *Manager) Destroy(ctx context.Context, name string) error {
	conf, err := m.VMs.ReadConf(name)
	if errors.Is(err, vmbhyve.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s's config: %w", name, err)
	}
	if mk, ok := readMarker(conf); !ok || mk.owner != m.Owner.ID() {
		return fmt.Errorf("refusing to destroy %s: it carries no ownership marker of this runner", name)
	}
	err = m.phase(&VM{Name: name}, PhaseDestroy, func() error { return m.stopAndDestroy(ctx, name) })
	if err == nil {
		m.Held.Remove(name)
	}
	return err
}

// LeftBehindError is a VM that a failed or cancelled create could not
// destroy: it still exists, and only a sweep (or an operator) removes it.
type LeftBehindError struct {
	Name string
	Err  error
}

func (e *LeftBehindError) Error() string { return e.Name + " is left behind: " + e.Err.Error() }
func (e *LeftBehindError) Unwrap() error { return e.Err }

// LeftBehind names the VM; consumers match it with errors.As on an
// interface of their own.
func (e *LeftBehindError) LeftBehind() string { return e.Name }

// stopAndDestroy powers the VM off and destroys it. A job VM is disposable:
// nothing in it needs a clean shutdown, and waiting for an ACPI one (which
// a guest may ignore) delayed every job's reported end, since upstream
// sends the job's status only after Cleanup returns.
//
// vm::confirm_stopped (lib/vm-core) refuses to destroy while run.lock
// exists; a `vm _run` that started after all (its start was interrupted, or
// it logged nothing in time) holds one. Such a refusal (ErrBusy) means
// stopping again and retrying, until ctx ends.
func (m *Manager) stopAndDestroy(ctx context.Context, name string) error {
	for {
		if err := m.powerOff(ctx, name); err != nil {
			return err
		}
		if err := m.unbind(ctx, name); err != nil {
			return err
		}
		err := m.VMs.Destroy(ctx, name)
		switch {
		case err == nil || errors.Is(err, vmbhyve.ErrNotFound):
			return nil
		case !errors.Is(err, vmbhyve.ErrBusy) || ctx.Err() != nil:
			return fmt.Errorf("destroy %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("destroy %s: %w", name, err)
		case <-time.After(busyRetry):
		}
	}
}

// powerOff ends the guest without an ACPI grace: the driver's Stop with no
// timeout runs `vm poweroff -f` and waits until vm-bhyve lists it Stopped.
// A VM that is already gone is not an error.
func (m *Manager) powerOff(ctx context.Context, name string) error {
	if err := m.VMs.Stop(ctx, name, 0); err != nil && !errors.Is(err, vmbhyve.ErrNotFound) {
		return fmt.Errorf("power off %s: %w", name, err)
	}
	return nil
}

// busyRetry paces destroys refused for a run.lock: `vm _run` removes it
// within moments of its guest stopping.
const busyRetry = 200 * time.Millisecond

// destroyBudget bounds cleanup: a forced poweroff and the destroy itself.
func (m *Manager) destroyBudget() time.Duration {
	return 2 * time.Minute
}

func (m *Manager) phase(vm *VM, p Phase, fn func() error) error {
	if m.Observer != nil {
		m.Observer.PhaseStarted(vm.Name, p)
	}
	start := m.now()
	err := fn()
	took := m.now().Sub(start)
	vm.Timings = append(vm.Timings, Timing{Phase: p, Took: took})
	if m.Observer != nil {
		m.Observer.PhaseDone(vm.Name, p, took, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (v *VM) timingSummary() string {
	var total time.Duration
	parts := make([]string, 0, len(v.Timings))
	for _, t := range v.Timings {
		total += t.Took
		parts = append(parts, fmt.Sprintf("%s %s", t.Phase, t.Took.Round(time.Millisecond)))
	}
	return fmt.Sprintf("%s (%s)", total.Round(time.Millisecond), strings.Join(parts, ", "))
}

// HeldSet is the set of VM names in use by this process.
type HeldSet struct {
	mu    sync.Mutex
	names map[string]bool
}

func (h *HeldSet) Add(name string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.names == nil {
		h.names = map[string]bool{}
	}
	h.names[name] = true
}

func (h *HeldSet) Remove(name string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.names, name)
}

func (h *HeldSet) Has(name string) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.names[name]
}
