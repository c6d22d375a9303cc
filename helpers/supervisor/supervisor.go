// Package supervisor is everything the native executor keeps for the life
// of the gitlab-runner process, across jobs and runners: the view of the
// bhyve host, one warm pool per runner, sweeps, background destroys,
// admission and the metrics. It speaks in the core's terms; executors/bhyve
// only translates upstream's calls into these.
//
// One name per concept: a Claim is capacity taken before GitLab is asked
// for a job (a warm VM, or leave to boot one); a Request is the job as the
// front-end describes it (its jobvm.Job identity, image, shell, resources);
// an Assignment is the job's VM once Prepare gave it one.
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/metrics"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/pool"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Runner is what the front-end knows about one [[runners]] entry.
type Runner struct {
	Name         string // `name` in config.toml: the key of its bhyve.toml section
	SettingsPath string // where its bhyve.toml is
	Limit        int    // `limit` in config.toml; 0 means none
}

// Settings reads the runner's bhyve.toml afresh.
func (r Runner) Settings() (*settings.Settings, error) {
	return settings.Load(r.SettingsPath, r.Name)
}

// ErrExhausted means the runner's pool is empty and at its limit: ask GitLab
// for no job until a VM is free.
var ErrExhausted = pool.ErrExhausted

// ErrNoMemory means a VM of the template's size would leave less than
// memory_reserve free on the host: ask GitLab for no job until memory frees
// up. It wraps the *jobvm.AdmissionError that says by how much.
var ErrNoMemory = errors.New("bhyve: not enough free host memory for a VM of the template's size")

// Supervisor is the process-wide state. The zero value is not usable; use New.
type Supervisor struct {
	metrics *metrics.Collector
	// Dialer connects to guests (nil: a plain net.Dialer). The simulated
	// host's tests inject one that dials inside its network namespace.
	Dialer guestssh.Dialer
	// Logf is the runner's log (never a job's).
	Logf func(format string, args ...any)
	// SweepTimeout bounds one sweep.
	SweepTimeout time.Duration
	// SweepInterval is the time between sweeps: VMs become orphans while
	// the runner runs too (a destroy that failed, a Create that could not
	// clean up after itself).
	SweepInterval time.Duration

	once    sync.Once
	host    *jobvm.Host
	hostErr error

	stop     context.Context // ends on Shutdown: sweepers stop
	stopNow  context.CancelFunc
	sweepers sync.WaitGroup

	mu      sync.Mutex
	runners map[string]*runnerState
}

type runnerState struct {
	sweeper sync.Once
	kick    chan struct{} // a job request came: retry what settings blocked
	swept   chan struct{} // closed when the first sweep is done
	// starting serialises pool starts; the pool's factory takes mu, so mu
	// cannot be held while a pool starts.
	starting sync.Mutex

	mu        sync.Mutex
	runner    Runner // the latest the front-end passed
	pool      *pool.Pool[*poolVM]
	poolError string // the last reason the pool could not start, logged once
	refusing  bool   // Acquire refuses for lack of memory (logged on change)
}

// New returns a Provider. It touches nothing on the host: upstream builds
// every provider at every process start, helper commands included.
func New() *Supervisor {
	stop, stopNow := context.WithCancel(context.Background())
	return &Supervisor{
		metrics: metrics.New(), Logf: func(string, ...any) {}, SweepTimeout: 10 * time.Minute, SweepInterval: 5 * time.Minute,
		stop: stop, stopNow: stopNow, runners: map[string]*runnerState{},
	}
}

// Collector is the provider's Prometheus collector.
func (p *Supervisor) Collector() prometheus.Collector { return p.metrics }

// jobHost is made on first use. The native executor's VMs are held by this
// very process.
func (p *Supervisor) jobHost() (*jobvm.Host, error) {
	p.once.Do(func() {
		p.host, p.hostErr = jobvm.NewHost(os.Getpid(), true)
		if p.host != nil {
			p.host.Dialer = p.Dialer
			p.host.Logf = p.Logf
		}
		p.metrics.SetPools(p.poolStats)
	})
	return p.host, p.hostErr
}

// Claim is one job's claim on the runner's capacity, taken before GitLab is
// asked for a job: a warm VM, or leave to boot one.
type Claim struct {
	state *runnerState
	claim *pool.Claim[*poolVM]
}

// Acquire claims capacity for the next job of runner r. The first call for
// a runner starts sweeping its orphans (in the background) and starts its
// pool; while its settings do not load, every call tries again.
func (p *Supervisor) Acquire(r Runner) (*Claim, error) {
	st, err := p.state(r)
	if err != nil {
		return nil, err
	}
	st.mu.Lock()
	pl := st.pool
	st.mu.Unlock()
	if pl == nil {
		// The pool could not start (settings broken): let the job come and
		// fail with the settings error in its log, where operators look.
		return &Claim{state: st}, nil
	}
	c, err := pl.Acquire()
	if err != nil {
		return nil, err
	}
	if !c.Warm() {
		if err := p.admitDefault(st); err != nil {
			pl.Release(c)
			return nil, err
		}
	}
	return &Claim{state: st, claim: c}, nil
}

// Release ends a claim after its job (or when no job came).
func (p *Supervisor) Release(s *Claim) {
	if s == nil || s.claim == nil {
		return
	}
	s.state.mu.Lock()
	pl := s.state.pool
	s.state.mu.Unlock()
	pl.Release(s.claim)
}

func (p *Supervisor) state(r Runner) (*runnerState, error) {
	host, err := p.jobHost()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	st, ok := p.runners[r.Name]
	if !ok {
		st = &runnerState{runner: r, kick: make(chan struct{}, 1), swept: make(chan struct{})}
		p.runners[r.Name] = st
	}
	p.mu.Unlock()

	st.mu.Lock()
	st.runner = r
	st.mu.Unlock()

	// First sight of this runner in this process: sweep what a previous
	// process left, then fill the pool (its VMs are held, sweeps skip them).
	st.sweeper.Do(func() {
		p.sweepers.Add(1)
		go p.sweepLoop(host, st)
	})
	select {
	case st.kick <- struct{}{}:
	default:
	}
	p.startPool(host, st)
	return st, nil
}

// startPool starts the runner's pool unless it runs. A bhyve.toml that does
// not load leaves it stopped until a later job request finds it fixed.
func (p *Supervisor) startPool(host *jobvm.Host, st *runnerState) {
	st.starting.Lock()
	defer st.starting.Unlock()
	st.mu.Lock()
	running, name := st.pool != nil, st.runner.Name
	st.mu.Unlock()
	if running || p.stop.Err() != nil {
		return
	}
	pl, err := pool.New[*poolVM](&poolFactory{p: p, host: host, st: st}, p.Logf)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		if err.Error() != st.poolError {
			st.poolError = err.Error()
			p.Logf("bhyve: runner %q: warm pool not started (trying again at the next job request): %v", name, err)
		}
		return
	}
	st.pool, st.poolError = pl, ""
}

// sweepLoop sweeps the runner's orphans every SweepInterval, until
// Shutdown. While the settings do not load, each job request retries.
func (p *Supervisor) sweepLoop(host *jobvm.Host, st *runnerState) {
	defer p.sweepers.Done()
	lastErr, first := "", true
	for {
		err := p.sweep(host, st)
		var next <-chan time.Time
		if err == nil {
			if first {
				close(st.swept)
				first = false
			}
			lastErr = ""
			next = time.After(p.SweepInterval)
		} else if err.Error() != lastErr {
			lastErr = err.Error()
			p.Logf("bhyve: runner %q: not sweeping orphaned VMs (trying again at the next job request): %v", st.name(), err)
		}
		select {
		case <-p.stop.Done():
			return
		case <-next:
		case <-st.kick:
			if err == nil {
				// A sweep ran recently: wait for the interval.
				select {
				case <-p.stop.Done():
					return
				case <-next:
				}
			}
		}
	}
}

func (st *runnerState) name() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.runner.Name
}

// sweep destroys the runner's orphans; it fails only when the settings do
// not load (a sweep that could not list VMs is logged and counts as done).
func (p *Supervisor) sweep(host *jobvm.Host, st *runnerState) error {
	st.mu.Lock()
	r := st.runner
	st.mu.Unlock()
	s, err := r.Settings()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.stop, p.SweepTimeout)
	defer cancel()
	found, err := host.Manager(s, "", "").Sweep(ctx, false)
	swept := 0
	for _, f := range found {
		if f.Verdict == jobvm.Orphan {
			if f.Err == nil {
				swept++
			}
			p.Logf("bhyve: runner %q: orphaned VM %s (job %d): destroyed: %v", r.Name, f.Name, f.Job, errOrOK(f.Err))
		}
	}
	p.metrics.Swept(r.Name, swept)
	if err != nil {
		p.Logf("bhyve: runner %q: sweeping orphaned VMs: %v", r.Name, err)
	}
	return nil
}

// WaitSwept blocks until the first sweep of runner name has finished.
func (p *Supervisor) WaitSwept(ctx context.Context, name string) error {
	p.mu.Lock()
	st, ok := p.runners[name]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("runner %q was never acquired", name)
	}
	select {
	case <-st.swept:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poolFactory boots pool VMs from the runner's current settings.
type poolFactory struct {
	p    *Supervisor
	host *jobvm.Host
	st   *runnerState
}

func (f *poolFactory) Config() (pool.Config, error) {
	f.st.mu.Lock()
	r := f.st.runner
	f.st.mu.Unlock()
	s, err := r.Settings()
	if err != nil {
		return pool.Config{}, err
	}
	return pool.Config{
		IdleCount:          s.Pool.IdleCount,
		IdleTime:           s.Pool.IdleTime,
		MaxUseCount:        s.Pool.MaxUseCount,
		MaxConcurrentBoots: s.Pool.MaxConcurrentBoots,
		Limit:              r.Limit,
		Recipe:             currentRecipe(f.host, s),
	}, nil
}

// poolVM is a pool VM and the recipe it was made from.
type poolVM struct {
	*jobvm.VM
	recipe string
}

func (v *poolVM) Recipe() string { return v.recipe }

// recipe fingerprints every setting a booted pool VM embodies: where it was
// cloned from (snapshot: the one actually cloned, so "latest" as of the
// clone), how vm-bhyve reaches it, its name and marker, and how its SSH
// connection was opened and verified. A VM made from other values would
// not be the VM the settings now describe. Settings a job applies itself
// (shell, builds_dir, ...) are not in it. It is a hash, so that the
// password in it can never reach a log.
func recipe(s *settings.Settings, snapshot string) string {
	h := sha256.New()
	for _, v := range []any{
		s.Template, snapshot, s.VMCommand, s.SysrcCommand, s.Privilege, s.VMDir, s.NamePrefix, s.HostID,
		s.SSH.User, s.SSH.Port, s.SSH.IdentityFile, s.SSH.KnownHostsFile, s.SSH.HostKey,
		s.SSH.Password.Reveal(), s.SSH.PasswordFile, s.SSH.KeepAliveInterval, s.SSH.InsecureSkipHostKeyCheck, s.KillGrace,
	} {
		fmt.Fprintf(h, "%q\x00", fmt.Sprint(v))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// currentRecipe is the recipe a VM cloned now would have. With snapshot =
// "latest" the settings stay the same when `template rotate` adds a
// snapshot, so the snapshot is resolved here: a pool VM of an older one is
// out of date as soon as a newer one exists. A snapshot that does not
// resolve stays as written; no pool VM has that recipe, and a new clone
// fails with the reason.
func currentRecipe(host *jobvm.Host, s *settings.Settings) string {
	snap, err := host.Driver(s).ResolveSnapshot(s.Template, s.Snapshot)
	if err != nil {
		snap = s.Snapshot
	}
	return recipe(s, snap)
}

func (f *poolFactory) Create(ctx, cleanup context.Context) (*poolVM, error) {
	f.st.mu.Lock()
	r := f.st.runner
	f.st.mu.Unlock()
	s, err := r.Settings()
	if err != nil {
		return nil, err
	}
	m := f.host.Manager(s, "", "")
	m.Observer = f.p.metrics.Observer(r.Name)
	vm, err := m.CreateNamed(ctx, cleanup, jobvm.PoolVMName(s.NamePrefix, r.Name), 0, func(format string, args ...any) {
		f.p.Logf("bhyve: runner %q: pool: "+format, append([]any{r.Name}, args...)...)
	})
	if err != nil {
		return nil, err
	}
	return &poolVM{VM: vm, recipe: recipe(s, vm.Snapshot)}, nil
}

// Request is what a job asks of its VM.
type Request struct {
	Job   jobvm.Job
	Image string // the job's image:, already expanded
	Shell string // the command line stage scripts are piped to ("" = settings)
	// Resources is the job's BHYVE_CPUS and BHYVE_MEMORY.
	Resources jobvm.Resources
	// Observer, if set, also sees the VM's phases (the native executor maps
	// them to executor stages).
	Observer jobvm.Observer
}

// Assignment is one job's VM and where it came from.
type Assignment struct {
	VM   *jobvm.VM
	Warm bool

	p        *Supervisor
	runner   string
	claim    *pool.Claim[*poolVM]
	finished bool
}

// Prepare gives the job its VM: the claim's warm VM when the job wants the
// pooled template and the VM still answers, otherwise one booted now.
func (p *Supervisor) Prepare(ctx context.Context, claim *Claim, r Runner, req Request, logf jobvm.Logf) (*Assignment, error) {
	start := time.Now()
	s, err := r.Settings()
	if err != nil {
		return nil, err
	}
	template, warning, err := s.SelectTemplate(req.Image)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		logf("%s", warning)
	}
	host, err := p.jobHost()
	if err != nil {
		return nil, err
	}
	shell := req.Shell
	if shell == "" {
		shell = s.ShellCommand()
	}
	job := &Assignment{p: p, runner: r.Name}
	if claim != nil {
		// Warm or cold, the job's VM is retired through its claim, so that
		// it counts against the limit until destroyed.
		job.claim = claim.claim
	}
	m := host.Manager(s, template, shell)
	m.Config.Resources = req.Resources
	// Upstream asked GitLab for this job after Acquire found room for a VM
	// of the template's size; a bigger one waits for memory a while.
	m.Config.AdmissionWait = s.BootTimeout
	// A pool VM has the template's size: a job that asks for another boots
	// its own. An unknown template is left for the clone to report.
	size, err := m.Size()
	if err != nil && !errors.Is(err, vmbhyve.ErrNotFound) {
		return nil, err
	}
	if claim != nil && claim.claim != nil && template == s.Template && err == nil && len(size.Set) == 0 {
		if vm, ok := claim.claim.Take(ctx, currentRecipe(host, s)); ok {
			vm.Shell = shell
			job.VM, job.Warm = vm.VM, true
			logf("Using warm VM %s at %s (booted in %s)", vm.Name, vm.Address.IP, bootTime(vm.VM))
			logf("VM size: %s", size)
			p.metrics.Ready(r.Name, true, time.Since(start))
			return job, nil
		}
	}

	if claim != nil && claim.claim != nil {
		// A warm VM the job did not take goes back now, not when upstream
		// releases the claim after the whole job: meanwhile it would stand
		// beside the job's own VM, uncounted.
		if err := claim.claim.Return(ctx); err != nil {
			p.Logf("bhyve: runner %q: %v", r.Name, err)
		}
	}
	m.Observer = observers{p.metrics.Observer(r.Name), req.Observer}
	vm, err := m.Create(ctx, req.Job, logf)
	if err != nil {
		var refused *jobvm.AdmissionError
		if errors.As(err, &refused) {
			p.metrics.AdmissionRefused(r.Name, "prepare")
		}
		return nil, err
	}
	job.VM = vm
	p.metrics.Ready(r.Name, false, time.Since(start))
	return job, nil
}

// Run runs one stage in the job's VM.
func (j *Assignment) Run(ctx context.Context, script io.Reader, stdout, stderr io.Writer) error {
	err := j.VM.Run(ctx, script, stdout, stderr)
	j.p.metrics.StageFailed(j.runner, err)
	return err
}

// Finish is the end of the job's use of its VM: a warm VM goes back to the
// pool if max_use_count allows and the job went well. Any other is powered
// off before Finish returns and destroyed in the background (Shutdown waits
// for it); upstream reports the job's end only after Cleanup, so the job
// waits for nothing more than the VM being unable to run anything.
// Idempotent.
func (j *Assignment) Finish(ctx context.Context, jobErr error) error {
	if j == nil || j.finished {
		return nil
	}
	j.finished = true
	switch {
	case j.claim == nil:
		// No pool (its settings never loaded): nothing tracks a background
		// destroy, so it happens here.
		return j.VM.Close(ctx)
	case j.Warm:
		return j.claim.Finish(ctx, jobErr == nil)
	default:
		return j.claim.Retire(ctx, &poolVM{VM: j.VM})
	}
}

// Shutdown drains every pool at once, within ctx (upstream's
// shutdown_timeout): idle VMs and VMs of finished jobs are destroyed, boots
// cancelled.
func (p *Supervisor) Shutdown(ctx context.Context) error {
	p.stopNow()
	p.mu.Lock()
	states := make([]*runnerState, 0, len(p.runners))
	for _, st := range p.runners {
		states = append(states, st)
	}
	p.mu.Unlock()
	errs := make([]error, len(states))
	var wg sync.WaitGroup
	for i, st := range states {
		st.mu.Lock()
		pl := st.pool
		st.mu.Unlock()
		if pl != nil {
			wg.Go(func() { errs[i] = pl.Shutdown(ctx) })
		}
	}
	wg.Wait()
	swept := make(chan struct{})
	go func() { p.sweepers.Wait(); close(swept) }()
	select {
	case <-swept:
	case <-ctx.Done():
		// The pools may have used up the deadline while the sweeps had
		// long finished; select picks at random among ready cases.
		select {
		case <-swept:
		default:
			errs = append(errs, fmt.Errorf("bhyve: a sweep is still running: %w", ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

func (p *Supervisor) poolStats() []metrics.PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]metrics.PoolStats, 0, len(p.runners))
	for name, st := range p.runners {
		st.mu.Lock()
		pl := st.pool
		st.mu.Unlock()
		if pl == nil {
			continue
		}
		s := pl.Stats()
		out = append(out, metrics.PoolStats{Runner: name, Idle: s.Idle, Booting: s.Booting, InUse: s.InUse, Destroying: s.Destroying, DestroyRetries: s.DestroyRetries})
	}
	slices.SortFunc(out, func(a, b metrics.PoolStats) int {
		if a.Runner < b.Runner {
			return -1
		}
		return 1
	})
	return out
}

// observers fans phases out to several observers; nil entries are skipped.
type observers []jobvm.Observer

func (o observers) PhaseStarted(vm string, ph jobvm.Phase) {
	for _, x := range o {
		if x != nil {
			x.PhaseStarted(vm, ph)
		}
	}
}

func (o observers) PhaseDone(vm string, ph jobvm.Phase, took time.Duration, err error) {
	for _, x := range o {
		if x != nil {
			x.PhaseDone(vm, ph, took, err)
		}
	}
}

func bootTime(vm *jobvm.VM) time.Duration {
	var total time.Duration
	for _, t := range vm.Timings {
		total += t.Took
	}
	return total.Round(time.Millisecond)
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
