package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type fakeVM struct {
	id         int
	recipe     string
	dead       atomic.Bool
	poweredOff atomic.Int32
	closed     atomic.Int32
	// hold, if set, makes Close wait for it to close (or for ctx).
	hold chan struct{}
	// failCloses is how many Closes fail before one succeeds.
	failCloses atomic.Int32
}

func (v *fakeVM) Ping(ctx context.Context) error {
	if v.dead.Load() {
		return errors.New("connection lost")
	}
	return nil
}

func (v *fakeVM) Recipe() string { return v.recipe }

func (v *fakeVM) PowerOff(ctx context.Context) error {
	v.poweredOff.Add(1)
	return nil
}

func (v *fakeVM) Close(ctx context.Context) error {
	if v.hold != nil {
		select {
		case <-v.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if v.failCloses.Add(-1) >= 0 {
		return errors.New("failed to destroy ZFS dataset")
	}
	v.closed.Add(1)
	return nil
}

// factory boots fake VMs, optionally slowly or failing, and records how
// many boots ran at once.
type factory struct {
	mu        sync.Mutex
	cfg       Config
	made      []*fakeVM
	fail      int // fail this many boots first
	bootTime  time.Duration
	running   int
	maxAtOnce int
	attempts  int
	block     bool // boots wait for ctx to end
	// stuckCleanup: a cancelled boot's cleanup runs until its cleanup
	// context ends, then reports the VM left behind.
	stuckCleanup bool
}

// leftVM is what jobvm.LeftBehindError looks like to the pool.
type leftVM struct{ name string }

func (e *leftVM) Error() string      { return e.name + " is left behind" }
func (e *leftVM) LeftBehind() string { return e.name }

func (f *factory) Config() (Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg, nil
}

func (f *factory) set(mut func(*Config)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mut(&f.cfg)
}

func (f *factory) Create(ctx, cleanup context.Context) (*fakeVM, error) {
	f.mu.Lock()
	f.attempts++
	f.running++
	f.maxAtOnce = max(f.maxAtOnce, f.running)
	failing := f.fail > 0
	if failing {
		f.fail--
	}
	wait, block := f.bootTime, f.block
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	if block {
		<-ctx.Done()
		if f.stuckCleanup {
			<-cleanup.Done()
			return nil, fmt.Errorf("%w (and destroying failed too: %w)", ctx.Err(), &leftVM{name: "pool-vm"})
		}
		return nil, ctx.Err()
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if failing {
		return nil, errors.New("clone failed")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v := &fakeVM{id: len(f.made), recipe: f.cfg.Recipe}
	f.made = append(f.made, v)
	return v, nil
}

func (f *factory) snapshot() (made []*fakeVM, maxAtOnce, attempts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeVM(nil), f.made...), f.maxAtOnce, f.attempts
}

func newPool(t *testing.T, f *factory) *Pool[*fakeVM] {
	t.Helper()
	p, err := New[*fakeVM](f, t.Logf)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, p.Shutdown(context.Background()))
		made, _, _ := f.snapshot()
		for _, v := range made {
			assert.Equal(t, int32(1), v.closed.Load(), "VM %d is destroyed exactly once by the end", v.id)
		}
	})
	return p
}

func waitStats(t *testing.T, p *Pool[*fakeVM], want Stats) {
	t.Helper()
	require.Eventually(t, func() bool { return p.Stats() == want }, 5*time.Second, 5*time.Millisecond, "want %+v, have %+v", want, p.Stats())
}

func TestFillsToIdleCountWithBoundedConcurrentBoots(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 5, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 2}, bootTime: 30 * time.Millisecond}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 5})
	_, maxAtOnce, attempts := f.snapshot()
	assert.Equal(t, 2, maxAtOnce, "max_concurrent_boots")
	assert.Equal(t, 5, attempts)
}

func TestWarmPickupReplenishesAndNeverReuses(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 2, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 2}}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 2})

	l, err := p.Acquire()
	require.NoError(t, err)
	vm, ok := l.Take(context.Background(), "")
	require.True(t, ok)
	waitStats(t, p, Stats{Idle: 2, InUse: 1}) // replenished in the background

	require.NoError(t, l.Finish(context.Background(), true))
	assert.Equal(t, int32(1), vm.poweredOff.Load(), "max_use_count 1: powered off after its job")
	require.Eventually(t, func() bool { return vm.closed.Load() == 1 }, 5*time.Second, 5*time.Millisecond, "and destroyed")
	p.Release(l)
	p.Release(l) // idempotent
	waitStats(t, p, Stats{Idle: 2})
}

func TestMaxUseCountReturnsTheVMUntilUsedUp(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 1, IdleTime: time.Hour, MaxUseCount: 2, MaxConcurrentBoots: 1}}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 1})

	use := func() *fakeVM {
		l, err := p.Acquire()
		require.NoError(t, err)
		vm, ok := l.Take(context.Background(), "")
		require.True(t, ok)
		require.NoError(t, l.Finish(context.Background(), true))
		p.Release(l)
		return vm
	}
	first := use()
	assert.Zero(t, first.closed.Load(), "back in the pool after its first job")
	second := use()
	assert.Same(t, first, second)
	require.Eventually(t, func() bool { return second.closed.Load() == 1 }, 5*time.Second, 5*time.Millisecond, "destroyed after its second job")

	l, err := p.Acquire()
	require.NoError(t, err)
	vm, ok := l.Take(context.Background(), "")
	if ok {
		// A failed job's VM is never put back, whatever max_use_count says.
		require.NoError(t, l.Finish(context.Background(), false))
		assert.Equal(t, int32(1), vm.poweredOff.Load())
	}
	p.Release(l)
}

func TestColdWhenEmptyExhaustedAtLimit(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 0, MaxUseCount: 1, MaxConcurrentBoots: 1, Limit: 2}}
	p := newPool(t, f)

	a, err := p.Acquire()
	require.NoError(t, err)
	_, ok := a.Take(context.Background(), "")
	assert.False(t, ok, "idle_count 0: every job boots its VM")
	b, err := p.Acquire()
	require.NoError(t, err)
	_, err = p.Acquire()
	require.ErrorIs(t, err, ErrExhausted, "two jobs run, the limit is two")

	p.Release(a)
	c, err := p.Acquire()
	require.NoError(t, err)
	p.Release(b)
	p.Release(c)
	_, _, attempts := f.snapshot()
	assert.Zero(t, attempts)
}

func TestLimitCapsIdlePlusBootingPlusInUse(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 3, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 3, Limit: 3}}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 3})

	var leases []*Claim[*fakeVM]
	for range 3 {
		l, err := p.Acquire()
		require.NoError(t, err)
		_, ok := l.Take(context.Background(), "")
		require.True(t, ok)
		leases = append(leases, l)
	}
	_, err := p.Acquire()
	require.ErrorIs(t, err, ErrExhausted)
	time.Sleep(2 * checkEvery)
	assert.Equal(t, Stats{InUse: 3}, p.Stats(), "no boots beyond the limit while 3 jobs run")

	for _, l := range leases {
		require.NoError(t, l.Finish(context.Background(), true))
		p.Release(l)
	}
	waitStats(t, p, Stats{Idle: 3})
}

func TestUntakenClaimGoesBackAndDeadIdleVMIsReplaced(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 1, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 1}}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 1})

	l, err := p.Acquire()
	require.NoError(t, err)
	p.Release(l) // no job came
	waitStats(t, p, Stats{Idle: 1})
	made, _, _ := f.snapshot()
	require.Len(t, made, 1, "the same VM went back")

	made[0].dead.Store(true)
	l, err = p.Acquire()
	require.NoError(t, err)
	_, ok := l.Take(context.Background(), "")
	assert.False(t, ok, "a dead idle VM is not handed to a job")
	p.Release(l)
	require.Eventually(t, func() bool { return made[0].closed.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	waitStats(t, p, Stats{Idle: 1})
}

func TestSurplusIdleVMsGoAfterIdleTime(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 3, IdleTime: 200 * time.Millisecond, MaxUseCount: 1, MaxConcurrentBoots: 3}}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 3})

	f.set(func(c *Config) { c.IdleCount = 1 })
	p.poke()
	waitStats(t, p, Stats{Idle: 1})
	made, _, _ := f.snapshot()
	closed := 0
	for _, v := range made {
		closed += int(v.closed.Load())
	}
	assert.Equal(t, 2, closed)
}

func TestFailedBootsBackOff(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 1, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 1}, fail: 2}
	p := newPool(t, f)
	time.Sleep(1500 * time.Millisecond)
	_, _, attempts := f.snapshot()
	assert.LessOrEqual(t, attempts, 2, "1s after the first failure at most one retry: no hot loop")
	waitStatsWithin(t, p, Stats{Idle: 1}, 15*time.Second)
}

func waitStatsWithin(t *testing.T, p *Pool[*fakeVM], want Stats, d time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return p.Stats() == want }, d, 10*time.Millisecond, "want %+v, have %+v", want, p.Stats())
}

func TestShutdownDrains(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 2, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 2}}
	p, err := New[*fakeVM](f, t.Logf)
	require.NoError(t, err)
	waitStats(t, p, Stats{Idle: 2})
	f.mu.Lock()
	f.block = true
	f.mu.Unlock()

	l, err := p.Acquire() // triggers a replacement boot, which blocks
	require.NoError(t, err)
	vm, ok := l.Take(context.Background(), "")
	require.True(t, ok)
	require.Eventually(t, func() bool { return p.Stats().Booting == 1 }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, p.Shutdown(context.Background()))
	made, _, _ := f.snapshot()
	assert.Equal(t, int32(1), made[1].closed.Load(), "the idle VM was destroyed")
	_, err = p.Acquire()
	assert.ErrorIs(t, err, ErrClosed)

	// The job still running finishes after shutdown: its VM is destroyed,
	// never returned.
	require.NoError(t, l.Finish(context.Background(), true))
	assert.Equal(t, int32(1), vm.poweredOff.Load())
	p.Release(l)
	waitStats(t, p, Stats{})
	assert.Equal(t, int32(1), vm.closed.Load())
}

func TestRetiredVMCountsAgainstTheLimitUntilDestroyed(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 0, MaxUseCount: 1, MaxConcurrentBoots: 1, Limit: 1}}
	p := newPool(t, f)

	l, err := p.Acquire()
	require.NoError(t, err)
	cold := &fakeVM{hold: make(chan struct{})}
	require.NoError(t, l.Retire(context.Background(), cold))
	assert.Equal(t, int32(1), cold.poweredOff.Load(), "powered off before Retire returns")
	assert.Equal(t, Stats{Destroying: 1}, p.Stats(), "the claim's count passed to the destroy")
	p.Release(l)
	assert.Equal(t, Stats{Destroying: 1}, p.Stats(), "Release after Retire counts nothing twice")
	_, err = p.Acquire()
	require.ErrorIs(t, err, ErrExhausted, "a VM being destroyed still takes its place under the limit")

	close(cold.hold)
	waitStats(t, p, Stats{})
	assert.Equal(t, int32(1), cold.closed.Load())
	l, err = p.Acquire()
	require.NoError(t, err)
	p.Release(l)
}

func TestShutdownWaitsForDestroysWithinItsContext(t *testing.T) {
	f := &factory{cfg: Config{MaxUseCount: 1, MaxConcurrentBoots: 1}}
	p, err := New[*fakeVM](f, t.Logf)
	require.NoError(t, err)

	quick, stuck := &fakeVM{hold: make(chan struct{})}, &fakeVM{hold: make(chan struct{})}
	for _, vm := range []*fakeVM{quick, stuck} {
		l, err := p.Acquire()
		require.NoError(t, err)
		require.NoError(t, l.Retire(context.Background(), vm))
		p.Release(l)
	}
	time.AfterFunc(50*time.Millisecond, func() { close(quick.hold) })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "one destroy never finishes")
	assert.Less(t, time.Since(start), time.Second, "Shutdown returns when its context ends")
	assert.Equal(t, int32(1), quick.closed.Load(), "it waited for the destroy that could finish")
	require.Eventually(t, func() bool { return p.Stats() == Stats{} }, 5*time.Second, 5*time.Millisecond, "the stuck destroy was abandoned, not leaked: %+v", p.Stats())
	assert.Zero(t, stuck.closed.Load())
}

func TestShutdownBoundsTheCleanupOfACancelledBoot(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 1, MaxUseCount: 1, MaxConcurrentBoots: 1}, block: true, stuckCleanup: true}
	var mu sync.Mutex
	var logged []string
	p, err := New[*fakeVM](f, func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, fmt.Sprintf(format, args...))
	})
	require.NoError(t, err)
	waitStats(t, p, Stats{Booting: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second+abandonGrace, "the boot's cleanup ends with Shutdown's deadline")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, logged, 1, "the VM left behind is logged before Shutdown returns")
	assert.Contains(t, logged[0], "could not destroy its VM pool-vm; the next start's sweep destroys it")
}

func TestReturnedVMGoesBackUnlessOverTheLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		limit     int
		want      Stats
		destroyed bool
	}{
		{"no limit: both stay idle", 0, Stats{Idle: 2, InUse: 1}, false},
		{"limit 2: the replacement and the job's own VM fill it", 2, Stats{Idle: 1, InUse: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &factory{cfg: Config{IdleCount: 1, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 1, Limit: tc.limit}}
			p := newPool(t, f)
			waitStats(t, p, Stats{Idle: 1})
			l, err := p.Acquire()
			require.NoError(t, err)
			waitStats(t, p, Stats{Idle: 1, InUse: 1}) // a replacement for the reserved VM
			made, _, _ := f.snapshot()

			require.NoError(t, l.Return(context.Background()))
			assert.Equal(t, tc.want, p.Stats())
			assert.Equal(t, tc.destroyed, made[0].closed.Load() == 1, "destroyed before Return returned")
			_, ok := l.Take(context.Background(), "")
			assert.False(t, ok, "a returned VM is no longer the claim's")
			p.Release(l)
		})
	}
}

func TestIdleVMsOfAnOldRecipeAreReplaced(t *testing.T) {
	f := &factory{cfg: Config{IdleCount: 2, IdleTime: time.Hour, MaxUseCount: 1, MaxConcurrentBoots: 2, Recipe: "old"}}
	p := newPool(t, f)
	waitStats(t, p, Stats{Idle: 2})
	l, err := p.Acquire()
	require.NoError(t, err)
	_, ok := l.Take(context.Background(), "new")
	assert.False(t, ok, "a job whose settings changed gets no VM of the old ones")
	p.Release(l)
	old, _, _ := f.snapshot()

	f.set(func(c *Config) { c.Recipe = "new" })
	p.poke()
	require.Eventually(t, func() bool {
		made, _, _ := f.snapshot()
		return p.Stats() == Stats{Idle: 2} && len(made) >= len(old)+2
	}, 5*time.Second, 5*time.Millisecond, "replenished with the new recipe: %+v", p.Stats())
	for _, v := range old {
		require.Eventually(t, func() bool { return v.closed.Load() == 1 }, 5*time.Second, 5*time.Millisecond, "VM %d of the old recipe destroyed", v.id)
	}
	l, err = p.Acquire()
	require.NoError(t, err)
	vm, ok := l.Take(context.Background(), "new")
	require.True(t, ok)
	assert.Equal(t, "new", vm.Recipe())
	require.NoError(t, l.Finish(context.Background(), true))
	p.Release(l)
}

func TestAFailedDestroyIsRetriedWithBackoff(t *testing.T) {
	f := &factory{cfg: Config{MaxUseCount: 1, MaxConcurrentBoots: 1, Limit: 1}}
	p := newPool(t, f)
	l, err := p.Acquire()
	require.NoError(t, err)
	vm := &fakeVM{}
	vm.failCloses.Store(2)
	start := time.Now()
	require.NoError(t, l.Retire(context.Background(), vm))
	p.Release(l)
	_, err = p.Acquire()
	require.ErrorIs(t, err, ErrExhausted, "a VM whose destroy failed still exists and counts")

	waitStatsWithin(t, p, Stats{DestroyRetries: 2}, 10*time.Second)
	assert.Equal(t, int32(1), vm.closed.Load())
	assert.GreaterOrEqual(t, time.Since(start), 3*time.Second, "1s, then 2s between the tries")
}
