// Package pool keeps VMs cloned, booted and SSH-verified before jobs ask for
// them, so a job starts in the time it takes to open a session instead of the
// time a guest takes to boot.
//
// Semantics follow upstream's autoscalers (docker+machine, the instance
// executor): idle_count VMs wait idle; surplus idle VMs go after idle_time; a
// VM serves max_use_count jobs (1: never reused); the runner's limit caps all
// VMs, idle, booting, in use and being destroyed; when the pool is empty at
// the limit, Acquire says so and the runner asks GitLab for no job until a VM
// is free.
//
// A VM a job is done with is powered off while the job waits and destroyed
// in the background: upstream reports a job's end only after its executor's
// Cleanup, so a job must wait for nothing it does not need.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Item is a pooled VM.
type Item interface {
	// Ping proves the VM still answers; an idle VM may have died.
	Ping(ctx context.Context) error
	// PowerOff stops the VM at once; afterwards it can run nothing.
	PowerOff(ctx context.Context) error
	// Close destroys the VM.
	Close(ctx context.Context) error
	// Recipe says what the VM was made from (see Config.Recipe).
	Recipe() string
}

// Config is the pool's policy. It is re-read on every maintenance pass, so
// operators can change it while the runner runs.
type Config struct {
	IdleCount          int
	IdleTime           time.Duration
	MaxUseCount        int
	MaxConcurrentBoots int
	Limit              int // the runner's limit; 0 means none
	// Recipe names what new VMs are made from (template, snapshot, how to
	// reach them...). An idle VM made from another recipe is out of date:
	// it serves no job and is replaced.
	Recipe string
}

// Factory makes pool VMs and knows the current policy.
type Factory[T Item] interface {
	Config() (Config, error)
	// Create boots a VM. ctx ends when the VM is no longer wanted (at
	// Shutdown); cleanup ends when Shutdown gives up waiting, and bounds
	// what destroying a cancelled boot's VM may take.
	Create(ctx, cleanup context.Context) (T, error)
}

// ErrExhausted means every VM the limit allows exists and none is idle.
var ErrExhausted = errors.New("bhyve pool: no idle VM and the runner's limit is reached")

// ErrClosed means the pool is shutting down.
var ErrClosed = errors.New("bhyve pool: shutting down")

// Stats is a snapshot of the pool for metrics.
type Stats struct {
	Idle, Booting, InUse, Destroying int
	// DestroyRetries counts failed destroys tried again, since the start.
	DestroyRetries int
}

// Pool is one runner's pool for one template.
type Pool[T Item] struct {
	f    Factory[T]
	logf func(format string, args ...any)
	now  func() time.Time

	ctx    context.Context // ends on Shutdown; boots run under it
	cancel context.CancelFunc
	// destroyCtx ends when Shutdown gives up waiting: destroys run under it.
	destroyCtx context.Context
	abandon    context.CancelFunc
	wake       chan struct{}
	wg         sync.WaitGroup

	mu         sync.Mutex
	cfg        Config
	idle       []*entry[T] // oldest first
	booting    int
	inUse      int // leases not yet released or retired
	destroying int
	retries    int       // failed destroys tried again
	failures   int       // consecutive failed boots
	retryAt    time.Time // no boots before this after failures
	closed     bool
}

type entry[T Item] struct {
	item  T
	since time.Time // idle since
	uses  int
}

// checkEvery bounds how late idle_time reaping and boot retries can be.
const checkEvery = time.Second

// New loads the policy and starts filling the pool in the background.
func New[T Item](f Factory[T], logf func(format string, args ...any)) (*Pool[T], error) {
	cfg, err := f.Config()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	dctx, abandon := context.WithCancel(context.Background())
	p := &Pool[T]{f: f, logf: logf, now: time.Now, ctx: ctx, cancel: cancel, destroyCtx: dctx, abandon: abandon, wake: make(chan struct{}, 1), cfg: cfg}
	p.wg.Add(1)
	go p.loop()
	return p, nil
}

// Claim is one job slot handed out by Acquire: a warm VM, or permission to
// boot one cold when the pool had none idle.
type Claim[T Item] struct {
	p       *Pool[T]
	e       *entry[T]
	taken   bool
	counted bool // still counted in the pool's inUse
}

// Acquire reserves a slot for the next job. It is cheap: upstream calls it
// before every job request.
func (p *Pool[T]) Acquire() (*Claim[T], error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	defer p.poke()
	p.retireStaleLocked()
	if len(p.idle) > 0 {
		e := p.idle[0]
		p.idle = p.idle[1:]
		p.inUse++
		return &Claim[T]{p: p, e: e, counted: true}, nil
	}
	if p.cfg.Limit > 0 && p.booting+p.inUse+p.destroying >= p.cfg.Limit {
		return nil, ErrExhausted
	}
	p.inUse++
	return &Claim[T]{p: p, counted: true}, nil
}

// Warm reports whether the claim holds an idle VM not yet taken; Take may
// still find it out of date or gone.
func (l *Claim[T]) Warm() bool { return l != nil && l.e != nil && !l.taken }

// Take hands the claim's warm VM to the job, after checking that it was
// made from recipe (what the job's settings make now) and still answers. It
// reports false when there is no such VM (boot one cold); an out-of-date or
// dead VM is destroyed in the background.
func (l *Claim[T]) Take(ctx context.Context, recipe string) (T, bool) {
	var zero T
	if l == nil || l.e == nil || l.taken {
		return zero, false
	}
	if got := l.e.item.Recipe(); got != recipe {
		l.p.logf("bhyve pool: the idle VM was made from settings since changed; booting one for the job instead")
		l.p.destroy(l.e.item)
		l.e = nil
		return zero, false
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := l.e.item.Ping(pctx); err != nil {
		l.p.logf("bhyve pool: idle VM is gone (%v); booting one for the job instead", err)
		l.p.destroy(l.e.item)
		l.e = nil
		return zero, false
	}
	l.taken = true
	l.e.uses++
	return l.e.item, true
}

// Return hands the claim's warm VM back untaken: the job wants another
// template and boots its own VM, which the claim now stands for. The VM goes
// back to the pool unless that would exceed the limit (the pool may have
// booted a replacement meanwhile); then it is destroyed before Return
// returns, so that the job's own VM never makes one too many.
func (l *Claim[T]) Return(ctx context.Context) error {
	if l == nil || l.e == nil || l.taken {
		return nil
	}
	e := l.e
	l.e = nil
	p := l.p
	p.mu.Lock()
	over := p.cfg.Limit > 0 && len(p.idle)+p.booting+p.inUse+p.destroying+1 > p.cfg.Limit
	if !p.closed && !over {
		p.idle = append([]*entry[T]{e}, p.idle...)
		p.poke()
		p.mu.Unlock()
		return nil
	}
	p.destroying++
	p.mu.Unlock()
	err := e.item.Close(ctx)
	p.mu.Lock()
	p.destroying--
	p.poke()
	p.mu.Unlock()
	if err != nil {
		p.destroy(e.item) // in the background, retried there
		return fmt.Errorf("bhyve pool: destroying an unused VM over the limit: %w", err)
	}
	return nil
}

// Finish is called when the job that took the warm VM is done with it. The
// VM goes back to the pool if it may serve another job, else it is retired
// (see Retire). reusable is false when the job failed in a way that makes
// the VM suspect.
func (l *Claim[T]) Finish(ctx context.Context, reusable bool) error {
	if l == nil || l.e == nil || !l.taken {
		return nil
	}
	e := l.e
	l.e = nil
	p := l.p
	p.mu.Lock()
	keep := reusable && !p.closed && e.uses < p.cfg.MaxUseCount
	if keep {
		e.since = p.now()
		p.idle = append(p.idle, e)
		p.poke()
	}
	p.mu.Unlock()
	if keep {
		return nil
	}
	return l.Retire(ctx, e.item)
}

// Retire ends a VM the claim's job used and that must serve no other: the
// warm VM, or one the job booted itself. It powers the VM off under ctx,
// then destroys it in the background; until it is gone it counts against
// the limit in place of the claim. A failed poweroff is reported, and the
// destroy happens anyway.
func (l *Claim[T]) Retire(ctx context.Context, item T) error {
	err := item.PowerOff(ctx)
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.counted {
		l.counted = false
		p.inUse--
	}
	p.destroyLocked(item)
	if err != nil {
		return fmt.Errorf("bhyve pool: power off (destroying it in the background anyway): %w", err)
	}
	return nil
}

// Release ends the claim. A warm VM the job never took (no job came, or it
// wanted another template) goes back to the pool.
func (p *Pool[T]) Release(l *Claim[T]) {
	if l == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.counted {
		l.counted = false
		p.inUse--
	}
	if l.e != nil && !l.taken {
		if p.closed {
			p.destroyLocked(l.e.item)
		} else {
			p.idle = append([]*entry[T]{l.e}, p.idle...)
		}
		l.e = nil
	}
	p.poke()
}

// Stats reports the pool's current sizes.
func (p *Pool[T]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Idle: len(p.idle), Booting: p.booting, InUse: p.inUse, Destroying: p.destroying, DestroyRetries: p.retries}
}

// Shutdown destroys the idle VMs, cancels boots in progress (their VMs are
// destroyed by the boot itself) and waits for all of it and for every
// destroy in progress, or for ctx. When ctx ends first, destroys still
// running are abandoned: the VMs stay, and the next process's sweep finds
// them.
func (p *Pool[T]) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		for _, e := range p.idle {
			p.destroyLocked(e.item)
		}
		p.idle = nil
	}
	p.mu.Unlock()
	p.cancel()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.abandon()
		// What was abandoned says so in the log (boot, destroyLocked);
		// give it a moment to, so that it comes before Shutdown's caller
		// moves on.
		select {
		case <-done:
		case <-time.After(abandonGrace):
		}
		return fmt.Errorf("bhyve pool: shutdown did not finish: %w", ctx.Err())
	}
}

// abandonGrace is how long Shutdown waits, once its deadline passed, for
// abandoned boots and destroys to return and log what they leave behind.
const abandonGrace = 2 * time.Second

// leftBehind is a boot error that names a VM its cleanup could not destroy
// (jobvm.LeftBehindError).
type leftBehind interface{ LeftBehind() string }

func (p *Pool[T]) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Pool[T]) loop() {
	defer p.wg.Done()
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		p.maintain()
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		case <-t.C:
		}
	}
}

// maintain reaps surplus idle VMs and starts the boots the policy wants.
func (p *Pool[T]) maintain() {
	cfg, err := p.f.Config()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.logf("bhyve pool: keeping the previous pool settings: %v", err)
	} else {
		p.cfg = cfg
	}
	if p.closed {
		return
	}
	now := p.now()

	p.retireStaleLocked()
	// Surplus idle VMs, oldest first, once they have idled idle_time.
	for len(p.idle) > p.cfg.IdleCount && now.Sub(p.idle[0].since) >= p.cfg.IdleTime {
		p.destroyLocked(p.idle[0].item)
		p.idle = p.idle[1:]
	}

	want := p.cfg.IdleCount - len(p.idle) - p.booting
	if p.cfg.Limit > 0 {
		want = min(want, p.cfg.Limit-len(p.idle)-p.booting-p.inUse-p.destroying)
	}
	want = min(want, p.cfg.MaxConcurrentBoots-p.booting)
	if want <= 0 || now.Before(p.retryAt) {
		return
	}
	p.booting += want
	for range want {
		p.wg.Add(1)
		go p.boot()
	}
}

func (p *Pool[T]) boot() {
	defer p.wg.Done()
	item, err := p.f.Create(p.ctx, p.destroyCtx)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.booting--
	defer p.poke()
	if err != nil {
		var lb leftBehind
		if p.ctx.Err() != nil && errors.As(err, &lb) {
			p.logf("bhyve pool: a boot cancelled at shutdown could not destroy its VM %s; the next start's sweep destroys it: %v", lb.LeftBehind(), err)
		}
		if p.ctx.Err() == nil {
			p.failures++
			// Back off so a broken template does not turn into a clone and
			// destroy loop: 1s, 2s, 4s ... at most a minute.
			backoff := min(time.Second<<min(p.failures-1, 6), time.Minute)
			p.retryAt = p.now().Add(backoff)
			p.logf("bhyve pool: booting an idle VM failed (%d in a row, next try in %s): %v", p.failures, backoff, err)
		}
		return
	}
	p.failures = 0
	if p.closed {
		p.destroyLocked(item)
		return
	}
	p.idle = append(p.idle, &entry[T]{item: item, since: p.now()})
}

// retireStaleLocked destroys idle VMs made from another recipe than the
// current one, so that settings edits apply to the next job.
func (p *Pool[T]) retireStaleLocked() {
	kept := p.idle[:0]
	for _, e := range p.idle {
		if e.item.Recipe() == p.cfg.Recipe {
			kept = append(kept, e)
		} else {
			p.destroyLocked(e.item)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
}

func (p *Pool[T]) destroy(item T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.destroyLocked(item)
}

// destroyLocked destroys a VM in the background, counted in destroying
// until it is gone. A failed destroy is tried again, after 1s, 2s, 4s ... at
// most a minute apart, until it succeeds or Shutdown gives up waiting:
// a VM that could not be destroyed still exists and still counts.
func (p *Pool[T]) destroyLocked(item T) {
	p.destroying++
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			p.destroying--
			p.poke()
			p.mu.Unlock()
		}()
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(p.destroyCtx, destroyTimeout)
			err := item.Close(ctx)
			cancel()
			if err == nil {
				return
			}
			if p.destroyCtx.Err() != nil {
				p.logf("bhyve pool: destroying a VM: %v; giving up at shutdown, the next start's sweep destroys it", err)
				return
			}
			backoff := min(time.Second<<min(attempt-1, 6), time.Minute)
			p.logf("bhyve pool: destroying a VM failed (%d in a row, next try in %s): %v", attempt, backoff, err)
			select {
			case <-time.After(backoff):
			case <-p.destroyCtx.Done():
				p.logf("bhyve pool: giving up at shutdown on destroying a VM (%v); the next start's sweep destroys it", err)
				return
			}
			p.mu.Lock()
			p.retries++
			p.mu.Unlock()
		}
	}()
}

// destroyTimeout bounds one destroy attempt.
const destroyTimeout = 5 * time.Minute
