package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/supervisor"
)

func newProvider(t *testing.T, h *fixture.Host) *supervisor.Supervisor {
	t.Helper()
	p := supervisor.New()
	p.Dialer = h
	p.Logf = t.Logf
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx))
		for _, name := range vmNames(t, h) {
			assert.False(t, strings.HasPrefix(name, "ci-"), "shutdown drained every pool VM, %s is left", name)
		}
	})
	return p
}

func vmNames(t *testing.T, h *fixture.Host) []string {
	t.Helper()
	out, err := exec.Command(h.VMCommand(), "list").Output()
	require.NoError(t, err)
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
		names = append(names, strings.Fields(line)[0])
	}
	return names
}

func gauge(t *testing.T, p *supervisor.Supervisor, state string) float64 {
	t.Helper()
	out, err := testutil.CollectAndFormat(p.Collector(), expfmt.TypeTextPlain, "gitlab_runner_bhyve_vms")
	require.NoError(t, err)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, `state="`+state+`"`) {
			var v float64
			_, err := fmt.Sscan(strings.Fields(line)[1], &v)
			require.NoError(t, err)
			return v
		}
	}
	return -1
}

func TestWarmPoolServesJobsAndReplenishes(t *testing.T) {
	h := fixture.New(t, sim.Options{}, "[runners.\"sim-runner\".pool]", "idle_count = 2", "max_concurrent_boots = 2")
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath, Limit: 4}

	first, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(first) // no job came: the pool fills meanwhile
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 2 }, 60*time.Second, 50*time.Millisecond)

	slot, err := p.Acquire(r)
	require.NoError(t, err)
	start := time.Now()
	job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 1}}, t.Logf)
	require.NoError(t, err)
	t.Logf("warm prepare took %s", time.Since(start))
	assert.True(t, job.Warm)
	var out strings.Builder
	require.NoError(t, job.Run(context.Background(), strings.NewReader("hostname"), &out, io.Discard))
	assert.Equal(t, job.VM.Name+"\n", out.String())
	assert.Equal(t, float64(1), gauge(t, p, "in_use"))

	require.NoError(t, job.Finish(context.Background(), nil))
	p.Release(slot)
	require.Eventually(t, func() bool { return !slices.Contains(vmNames(t, h), job.VM.Name) }, 30*time.Second, 20*time.Millisecond, "max_use_count 1: the job's VM is destroyed")
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 2 }, 60*time.Second, 50*time.Millisecond, "replenished")
}

func TestOtherTemplateGoesColdAndTheWarmVMGoesBack(t *testing.T) {
	h := fixture.New(t, sim.Options{}, `allowed_images = ["tmpl2"]`, "[runners.\"sim-runner\".pool]", "idle_count = 1")
	require.NoError(t, h.AddTemplate("tmpl2", "base"))
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}

	warmup, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(warmup)
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 60*time.Second, 50*time.Millisecond)

	var warm []string
	for _, name := range vmNames(t, h) {
		if strings.HasPrefix(name, "ci-sim-runner-p") {
			warm = append(warm, name)
		}
	}
	require.Len(t, warm, 1)

	slot, err := p.Acquire(r)
	require.NoError(t, err)
	job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 2}, Image: "tmpl2"}, t.Logf)
	require.NoError(t, err)
	assert.False(t, job.Warm)
	assert.Equal(t, "tmpl2", job.VM.Template)
	assert.Equal(t, jobvm.JobVMName("ci-", fixture.Runner, 2, 0), job.VM.Name)
	require.NoError(t, job.Finish(context.Background(), nil))
	p.Release(slot)
	// The unused VM went back during Prepare; a replacement the pool may
	// have started before that is surplus until idle_time.
	assert.GreaterOrEqual(t, gauge(t, p, "idle"), float64(1), "the unused warm VM went back to the pool")
	assert.Contains(t, vmNames(t, h), warm[0])
}

func TestLimitExhaustsThePool(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath, Limit: 1}
	a, err := p.Acquire(r)
	require.NoError(t, err)
	_, err = p.Acquire(r)
	require.ErrorIs(t, err, supervisor.ErrExhausted)
	p.Release(a)
	b, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(b)
}

func TestFirstAcquireSweepsWhatADeadRunnerLeft(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}

	vm := leaveOrphan(t, h, r, 9)

	p := newProvider(t, h)
	slot, err := p.Acquire(r)
	require.NoError(t, err)
	require.NoError(t, p.WaitSwept(context.Background(), r.Name))
	p.Release(slot)
	assert.NotContains(t, vmNames(t, h), vm)
	out, err := testutil.CollectAndFormat(p.Collector(), expfmt.TypeTextPlain, "gitlab_runner_bhyve_orphans_swept_total")
	require.NoError(t, err)
	assert.Contains(t, string(out), `gitlab_runner_bhyve_orphans_swept_total{runner="sim-runner"} 1`)
}

// coldJob prepares job jobID on a fresh simulated host whose runner has no
// pool and a limit of one VM.
func coldJob(t *testing.T, jobID int64) (*fixture.Host, *supervisor.Supervisor, supervisor.Runner, *supervisor.Claim, *supervisor.Assignment) {
	t.Helper()
	h := fixture.New(t, sim.Options{})
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath, Limit: 1}
	slot, err := p.Acquire(r)
	require.NoError(t, err)
	job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: jobID}}, t.Logf)
	require.NoError(t, err)
	return h, p, r, slot, job
}

// Upstream defers executor.Cleanup before it reports the job's status
// (common/build.go, Build.Run), so whatever Finish waits for delays every
// job's end in GitLab. A disposable VM is powered off, not shut down.
func TestFinishReturnsOnceTheVMIsPoweredOff(t *testing.T) {
	h, p, r, slot, job := coldJob(t, 3)
	require.False(t, job.Warm)

	start := time.Now()
	require.NoError(t, job.Finish(context.Background(), nil))
	took := time.Since(start)
	t.Logf("Finish took %s", took)
	assert.Less(t, took, time.Second, "no ACPI shutdown wait (the simulated guest takes 1.5s for one)")
	out, err := exec.Command(h.VMCommand(), "list").Output()
	require.NoError(t, err)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, job.VM.Name+" ") {
			assert.NotContains(t, line, "Running", "the VM can run nothing once Finish returned")
		}
	}
	p.Release(slot)
	require.Eventually(t, func() bool { return !slices.Contains(vmNames(t, h), job.VM.Name) }, 30*time.Second, 20*time.Millisecond, "destroyed in the background")
	require.Eventually(t, func() bool { return gauge(t, p, "destroying") == 0 }, 30*time.Second, 20*time.Millisecond)
	next, err := p.Acquire(r)
	require.NoError(t, err, "the destroyed VM no longer counts against the limit")
	p.Release(next)
}

// jobVMs counts the runner's VMs on the host (pool and job VMs, not the
// templates).
func jobVMs(t *testing.T, h *fixture.Host) int {
	n := 0
	for _, name := range vmNames(t, h) {
		if strings.HasPrefix(name, "ci-"+fixture.Runner+"-") {
			n++
		}
	}
	return n
}

// watchVMs samples the number of the runner's VMs until stopped and returns
// the most it saw.
func watchVMs(t *testing.T, h *fixture.Host) (stop func() int) {
	done, most := make(chan struct{}), make(chan int)
	go func() {
		top := 0
		for {
			top = max(top, jobVMs(t, h))
			select {
			case <-done:
				most <- top
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int { close(done); return <-most }
}

func TestJobOfAnotherTemplateHandsTheWarmVMBackWithinTheLimit(t *testing.T) {
	h := fixture.New(t, sim.Options{}, `allowed_images = ["tmpl2"]`, "[runners.\"sim-runner\".pool]", "idle_count = 1")
	require.NoError(t, h.AddTemplate("tmpl2", "base"))
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath, Limit: 2}

	warmup, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(warmup)
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 60*time.Second, 50*time.Millisecond)

	stop := watchVMs(t, h)
	slot, err := p.Acquire(r)
	require.NoError(t, err)
	job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 4}, Image: "tmpl2"}, t.Logf)
	require.NoError(t, err)
	require.False(t, job.Warm)
	// Long enough for a replacement boot (about 0.5s here) to show.
	time.Sleep(1500 * time.Millisecond)
	assert.Equal(t, float64(1), gauge(t, p, "idle"), "the warm VM the job did not use is back in the pool while the job runs")
	assert.Equal(t, float64(1), gauge(t, p, "in_use"), "the job's cold VM")
	require.NoError(t, job.Finish(context.Background(), nil))
	p.Release(slot)
	assert.LessOrEqual(t, stop(), 2, "never more VMs than the runner's limit")
}

// writeSettings rewrites the runner's bhyve.toml, as an operator editing it
// between jobs.
func writeSettings(t *testing.T, h *fixture.Host, extra ...string) {
	t.Helper()
	require.NoError(t, fixture.WriteSettings(h.Host, h.SettingsPath, extra...))
}

func TestPoolVMsFollowEditedSettings(t *testing.T) {
	pool := []string{"[runners.\"sim-runner\".pool]", "idle_count = 1"}
	h := fixture.New(t, sim.Options{}, pool...)
	// A second snapshot of the template, told apart by a file in its disk.
	require.NoError(t, os.WriteFile(filepath.Join(h.VMDir(), h.Template(), "disk0", "made-from"), []byte("v2\n"), 0o644))
	res, err := h.VM(context.Background(), "snapshot", h.Template()+"@v2")
	require.NoError(t, err)
	require.Zero(t, res.ExitCode, "vm snapshot: %s", res.Stderr)
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}

	madeFrom := func(jobID int64) string {
		t.Helper()
		slot, err := p.Acquire(r)
		require.NoError(t, err)
		defer p.Release(slot)
		job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: jobID}}, t.Logf)
		require.NoError(t, err)
		defer func() { require.NoError(t, job.Finish(context.Background(), nil)) }()
		var out strings.Builder
		require.NoError(t, job.Run(context.Background(), strings.NewReader("cat /made-from 2>/dev/null || echo base"), &out, io.Discard))
		return strings.TrimSpace(out.String())
	}

	warmup, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(warmup)
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 60*time.Second, 50*time.Millisecond)
	require.Equal(t, "base", madeFrom(1))
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 60*time.Second, 50*time.Millisecond)

	writeSettings(t, h, append(pool, `snapshot = "v2"`)...)
	assert.Equal(t, "v2", madeFrom(2), "the job right after the edit gets a VM of the new snapshot")
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 60*time.Second, 50*time.Millisecond)
	assert.Equal(t, "v2", madeFrom(3))
}

// leaveOrphan boots a job VM as a runner process that has died since would
// have left it, and returns its name.
func leaveOrphan(t *testing.T, h *fixture.Host, r supervisor.Runner, jobID int64) string {
	t.Helper()
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	old, err := jobvm.NewHost(dead.Process.Pid, true)
	if err != nil {
		// The process is gone already, so no start time: forge its identity.
		old = &jobvm.Host{Holder: jobvm.Holder(fmt.Sprintf("%d@1", dead.Process.Pid)), HolderIsSelf: true, Held: &jobvm.HeldSet{}}
	}
	old.Dialer = h
	s, err := r.Settings()
	require.NoError(t, err)
	vm, err := old.Manager(s, "", "").Create(context.Background(), jobvm.Job{ID: jobID}, t.Logf)
	require.NoError(t, err)
	require.NoError(t, vm.Detach())
	return vm.Name
}

func TestBrokenSettingsAtTheFirstRequestAreRetried(t *testing.T) {
	pool := []string{"[runners.\"sim-runner\".pool]", "idle_count = 1"}
	h := fixture.New(t, sim.Options{}, pool...)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	orphan := leaveOrphan(t, h, r, 7)
	writeSettings(t, h, append(pool, `boot_timeout = "soon"`)...)
	p := newProvider(t, h)

	slot, err := p.Acquire(r)
	require.NoError(t, err, "the job comes and fails with the settings error in its log")
	_, err = p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 1}}, t.Logf)
	require.ErrorContains(t, err, "boot_timeout")
	p.Release(slot)

	writeSettings(t, h, pool...)
	slot, err = p.Acquire(r)
	require.NoError(t, err)
	p.Release(slot)
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 20*time.Second, 50*time.Millisecond, "the pool started once the settings loaded")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.WaitSwept(ctx, r.Name))
	assert.NotContains(t, vmNames(t, h), orphan, "the sweep ran once the settings loaded")
}

func metricLine(t *testing.T, p *supervisor.Supervisor, name, labels string) string {
	t.Helper()
	out, err := testutil.CollectAndFormat(p.Collector(), expfmt.TypeTextPlain, name)
	require.NoError(t, err)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, name+"{"+labels+"}") {
			return line
		}
	}
	return ""
}

func TestFailedDestroyIsRetriedUntilTheVMIsGone(t *testing.T) {
	h, p, _, slot, job := coldJob(t, 5)
	require.NoError(t, h.SetFault(job.VM.Name, sim.Fault{Fail: sim.FailDestroy, FailTimes: 2}))

	require.NoError(t, job.Finish(context.Background(), nil))
	p.Release(slot)
	require.Eventually(t, func() bool { return !slices.Contains(vmNames(t, h), job.VM.Name) }, 20*time.Second, 50*time.Millisecond, "destroyed on the third try")
	assert.Equal(t, `gitlab_runner_bhyve_destroy_retries_total{runner="sim-runner"} 2`, metricLine(t, p, "gitlab_runner_bhyve_destroy_retries_total", `runner="sim-runner"`))
	assert.Equal(t, `gitlab_runner_bhyve_failures_total{reason="destroy",runner="sim-runner"} 2`, metricLine(t, p, "gitlab_runner_bhyve_failures_total", `reason="destroy",runner="sim-runner"`))
	require.Eventually(t, func() bool { return gauge(t, p, "destroying") == 0 }, 5*time.Second, 20*time.Millisecond)
}

func TestOrphansAreSweptPeriodically(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	p := newProvider(t, h)
	// Longer than leaveOrphan takes: a sweep during its boot would destroy
	// the VM it is making (its holder is dead) and fail it.
	p.SweepInterval = 5 * time.Second
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	slot, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(slot)
	require.NoError(t, p.WaitSwept(context.Background(), r.Name))

	orphan := leaveOrphan(t, h, r, 8)
	require.Eventually(t, func() bool { return !slices.Contains(vmNames(t, h), orphan) }, 20*time.Second, 50*time.Millisecond, "a later sweep found it")
}

// With snapshot = "latest" the settings do not change when `template
// rotate` adds a snapshot; the idle VM cloned from the older one must still
// be retired, so that the next job runs on the new build and the old
// snapshot loses its last clone.
func TestPoolVMsOfAnOlderSnapshotAreRetiredWithLatest(t *testing.T) {
	pool := []string{`snapshot = "latest"`, "[runners.\"sim-runner\".pool]", "idle_count = 1"}
	h := fixture.New(t, sim.Options{}, pool...)
	snapshot := func(snap, madeFrom string) {
		t.Helper()
		require.NoError(t, os.WriteFile(filepath.Join(h.VMDir(), h.Template(), "disk0", "made-from"), []byte(madeFrom+"\n"), 0o644))
		res, err := h.VM(context.Background(), "snapshot", h.Template()+"@"+snap)
		require.NoError(t, err)
		require.Zero(t, res.ExitCode, "vm snapshot: %s", res.Stderr)
	}
	snapshot("build-20260101-000000", "old")
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	warmVM := func() string {
		t.Helper()
		var name string
		require.Eventually(t, func() bool {
			name = ""
			for _, n := range vmNames(t, h) {
				if strings.HasPrefix(n, "ci-sim-runner-p") {
					name = n
				}
			}
			return gauge(t, p, "idle") == 1 && name != ""
		}, 60*time.Second, 50*time.Millisecond)
		return name
	}

	warmup, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(warmup)
	old := warmVM()
	origin, err := h.VM(context.Background(), "info", old)
	require.NoError(t, err)
	require.Contains(t, origin.Stdout, "@build-20260101-000000", "the warm VM is a clone of the first build")

	snapshot("build-20260102-000000", "new")
	start := time.Now()
	require.Eventually(t, func() bool { return !slices.Contains(vmNames(t, h), old) }, 30*time.Second, 20*time.Millisecond,
		"the idle VM of the older snapshot is retired without waiting for a job")
	t.Logf("idle VM of the older snapshot retired %s after the new snapshot appeared", time.Since(start).Round(time.Millisecond))
	warmVM()

	slot, err := p.Acquire(r)
	require.NoError(t, err)
	defer p.Release(slot)
	job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 1}}, t.Logf)
	require.NoError(t, err)
	defer func() { require.NoError(t, job.Finish(context.Background(), nil)) }()
	assert.True(t, job.Warm, "the replacement, cloned from the new snapshot, serves the job")
	assert.Equal(t, "build-20260102-000000", job.VM.Snapshot)
	var out strings.Builder
	require.NoError(t, job.Run(context.Background(), strings.NewReader("cat /made-from"), &out, io.Discard))
	assert.Equal(t, "new\n", out.String())
}

// Shutdown while the pool is booting: vm-bhyve's `_run` is still starting
// the guest (before run.lock, then in the loader) when the boot is
// abandoned. Shutdown must still end with every pool VM destroyed and no
// guest process left.
func TestShutdownDuringAPoolBootLeavesNoVM(t *testing.T) {
	h := fixture.New(t, sim.Options{}, "[runners.\"sim-runner\".pool]", "idle_count = 2", "max_concurrent_boots = 2")
	require.NoError(t, h.SetFault(h.Template(), sim.Fault{LockDelay: 1500 * time.Millisecond, LoaderDelay: 3 * time.Second}))
	p := supervisor.New()
	p.Dialer = h
	started := make(chan struct{}, 2)
	p.Logf = func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		t.Log(line)
		if strings.Contains(line, "pool: Starting ci-sim-runner-p") {
			started <- struct{}{}
		}
	}
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath, Limit: 4}
	claim, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(claim)
	for range 2 {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("the pool never started booting two VMs")
		}
	}
	time.Sleep(300 * time.Millisecond) // vm start returned; _run has not written run.lock

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, p.Shutdown(ctx))
	t.Logf("shutdown during boots took %s", time.Since(start).Round(time.Millisecond))
	assert.Equal(t, []string{h.Template()}, vmNames(t, h), "only the template is left")
	for _, proc := range h.Resources().Processes {
		assert.NotContains(t, proc.Cmdline, "ci-sim-runner-p", "a pool VM's process is left: %s", proc.Cmdline)
	}
}
