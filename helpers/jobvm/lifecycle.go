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

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Hypervisor is what the lifecycle needs from vm-bhyve (helpers/vmbhyve.Driver).
type Hypervisor interface {
	List(ctx context.Context) ([]vmbhyve.VM, error)
	Clone(ctx context.Context, template, snapshot, name string) error
	// ResolveSnapshot maps the settings' snapshot onto the one to clone
	// ("latest": the template's newest build snapshot at this moment).
	ResolveSnapshot(template, snapshot string) (string, error)
	AllocateMAC(ctx context.Context) (net.HardwareAddr, func(), error)
	SetConf(ctx context.Context, name string, kv ...string) error
	ReadConf(name string) (map[string]string, error)
	Start(ctx context.Context, name string) error
	WaitState(ctx context.Context, name string, ok func(vm vmbhyve.VM, exists bool) bool) (vmbhyve.VM, error)
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

// Connector opens the job's SSH connection to a guest booted from template
// (whose pinned host key it must verify).
type Connector interface {
	Connect(ctx context.Context, addr netip.Addr, template string) (Conn, error)
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
	PhaseClone   Phase = "clone"
	PhaseBoot    Phase = "boot"
	PhaseAddress Phase = "address"
	PhaseSSH     Phase = "ssh"
	PhaseDestroy Phase = "destroy"
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
	StopTimeout time.Duration // ACPI shutdown grace before poweroff -f
}

// Job identifies the CI job a VM is for.
type Job struct {
	ID   int64
	Slot int
}

// Manager creates, runs and destroys job VMs for one runner. One Manager may
// serve many concurrent jobs.
type Manager struct {
	VMs      Hypervisor
	Leases   Addresses
	SSH      Connector
	Owner    Owner
	Holder   Holder
	Config   Config
	Observer Observer
	Now      func() time.Time

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
	MAC      net.HardwareAddr
	Address  Address
	Timings  []Timing
	// Shell is the command line stage scripts are piped to; it starts as the
	// Manager's and a front-end may set its own (upstream's generated
	// BuildShell) before the first stage.
	Shell string

	m      *Manager
	conn   Conn
	mu     sync.Mutex
	closed bool
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
	return m.CreateNamed(ctx, name, job.ID, logf)
}

// CreateNamed is Create for VMs that serve no particular job yet (jobID 0):
// warm-pool VMs and doctor's test boot. The name must start with the
// configured prefix, or sweeps would never find the VM.
func (m *Manager) CreateNamed(ctx context.Context, name string, jobID int64, logf Logf) (_ *VM, err error) {
	if !strings.HasPrefix(name, m.Config.NamePrefix) {
		return nil, fmt.Errorf("VM name %q does not start with name_prefix %q", name, m.Config.NamePrefix)
	}
	if err := vmbhyve.ValidName(name); err != nil {
		return nil, fmt.Errorf("VM name %q built from name_prefix and runner name is not valid for vm-bhyve: %w", name, err)
	}
	if err := m.replaceLeftover(ctx, name, jobID, logf); err != nil {
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
			// The caller's context may be the reason we are here; destroying
			// must not depend on it.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.destroyBudget())
			defer cancel()
			if derr := v.destroy(dctx); derr != nil {
				err = fmt.Errorf("%w (and destroying %s failed too: %v)", err, name, derr)
			}
		}
		m.Held.Remove(name)
	}()

	// Clone. vm-bhyve's bare `vm clone TMPL NEW` leaves a snapshot behind per
	// clone, so we always clone from the named snapshot. A missing template
	// or snapshot comes back as a configuration error.
	// Resolved per job: a rotation switches the next clone to the new
	// snapshot while running jobs keep theirs.
	snap, err := m.VMs.ResolveSnapshot(m.Config.Template, m.Config.Snapshot)
	if err != nil {
		return nil, &failure.ConfigError{Err: err}
	}
	logf("Cloning %s@%s as %s", m.Config.Template, snap, name)
	if err := m.phase(v, PhaseClone, func() error {
		return m.VMs.Clone(ctx, m.Config.Template, snap, name)
	}); err != nil {
		return nil, err
	}
	cloned = true

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

	// Everything from `vm start` to an SSH session shares one deadline: an
	// operator thinks in "how long may a boot take", not per step.
	bootCtx, cancel := context.WithTimeout(ctx, m.Config.BootTimeout)
	defer cancel()

	logf("Starting %s (MAC %s)", name, mac)
	if err := m.phase(v, PhaseBoot, func() error { return m.boot(bootCtx, name) }); err != nil {
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

	if err := m.phase(v, PhaseSSH, func() error {
		c, err := m.SSH.Connect(bootCtx, v.Address.IP, v.Template)
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
			return nil
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

// boot starts the VM and waits until vm-bhyve reports it running. `vm start`
// returns before anything happened (and vm-bhyve ≤1.6 exits 0 even on
// failure), so only the state in `vm list` counts.
func (m *Manager) boot(ctx context.Context, name string) error {
	if err := m.VMs.Start(ctx, name); err != nil {
		return err
	}
	sawStarting := false
	var died bool
	_, err := m.VMs.WaitState(ctx, name, func(vm vmbhyve.VM, exists bool) bool {
		switch {
		case !exists:
			died = true
			return true
		case vm.State == vmbhyve.StateRunning:
			return true
		case vm.State == vmbhyve.StateLocked || vm.State == vmbhyve.StateBootloader:
			sawStarting = true
		case vm.State == vmbhyve.StateStopped && sawStarting:
			// It started and stopped again: bhyve exited during boot.
			died = true
			return true
		}
		return false
	})
	if err != nil {
		return err
	}
	if died {
		return fmt.Errorf("%s stopped while booting; vm-bhyve's log is %s/vm-bhyve.log", name, name)
	}
	return nil
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
	v := &VM{Name: name, Template: m.Config.Template, Shell: m.Config.Shell, MAC: mac, Address: Address{IP: addr}, m: m}
	if err := m.phase(v, PhaseSSH, func() error {
		c, err := m.SSH.Connect(ctx, addr, v.Template)
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
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	if v.conn != nil {
		return v.conn.Close()
	}
	return nil
}

// Close closes the SSH connection, then stops and destroys the VM. It is
// idempotent and safe to call on a VM whose Create failed half-way.
func (v *VM) Close(ctx context.Context) error {
	if v == nil {
		return nil
	}
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.mu.Unlock()
	return v.destroy(ctx)
}

func (v *VM) destroy(ctx context.Context) error {
	if v.conn != nil {
		_ = v.conn.Close()
	}
	err := v.m.phase(v, PhaseDestroy, func() error { return v.m.stopAndDestroy(ctx, v.Name) })
	v.m.Held.Remove(v.Name)
	return err
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
	m.Held.Remove(name)
	return err
}

func (m *Manager) stopAndDestroy(ctx context.Context, name string) error {
	if err := m.VMs.Stop(ctx, name, m.Config.StopTimeout); err != nil && !errors.Is(err, vmbhyve.ErrNotFound) {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	if err := m.VMs.Destroy(ctx, name); err != nil && !errors.Is(err, vmbhyve.ErrNotFound) {
		return fmt.Errorf("destroy %s: %w", name, err)
	}
	return nil
}

// destroyBudget bounds cleanup: an ACPI stop that may be ignored, a forced
// poweroff and the destroy itself.
func (m *Manager) destroyBudget() time.Duration {
	return m.Config.StopTimeout + 2*time.Minute
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
