package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// Names of the bhyve executor's metrics, as an operator's dashboards use them.
const (
	mReady  = "gitlab_runner_bhyve_job_vm_ready_seconds"
	mPhase  = "gitlab_runner_bhyve_phase_duration_seconds"
	mVMs    = "gitlab_runner_bhyve_vms"
	mSwept  = "gitlab_runner_bhyve_orphans_swept_total"
	mFailed = "gitlab_runner_bhyve_failures_total"
)

// What the bhyve executor writes into a job's log about where its VM came
// from (helpers/supervisor Prepare, helpers/jobvm Create).
var (
	warmLine  = regexp.MustCompile(`Using warm VM (\S+) at `)
	cloneLine = regexp.MustCompile(`Cloning \S+ as (\S+)`)
)

// runBed is a testbed with one registered bhyve runner and `run` settings.
func runBed(ctx context.Context, t *testing.T, name string, limit int, o testbed.Options) *testbed.Testbed {
	t.Helper()
	o.Runners = []string{name}
	if o.GitLab.TraceUpdateInterval == 0 {
		// Tests watch traces for markers; GitLab's 3 s would slow them.
		o.GitLab.TraceUpdateInterval = time.Second
	}
	tb := testbed.New(t, o)
	tb.Register(ctx, t, name, "bhyve", "--limit", fmt.Sprint(limit))
	tb.SetGlobal(t, "check_interval", "1")
	tb.SetGlobal(t, "listen_address", fmt.Sprintf("%q", testbed.MetricsAddr))
	return tb
}

// vmOf is the VM a job ran in, by what the executor logged in its trace.
func vmOf(trace string) (name string, warm bool) {
	trace = testbed.Plain(trace)
	if m := warmLine.FindStringSubmatch(trace); m != nil {
		return m[1], true
	}
	if m := cloneLine.FindStringSubmatch(trace); m != nil {
		return m[1], false
	}
	return "", false
}

// longJob runs until something stops it; "started" in its trace says its
// script runs.
func longJob(name string) gitlab.JobSpec {
	return gitlab.JobSpec{Name: name, Script: []string{"echo started", "sleep 60", "echo not-reached"}}
}

// jobThenQuit proves a (re)started runner works: one job succeeds, then
// SIGQUIT ends it cleanly with nothing left on the host.
func jobThenQuit(ctx context.Context, t *testing.T, tb *testbed.Testbed, r *testbed.Process) {
	t.Helper()
	id := tb.Enqueue(t, gitlab.JobSpec{Name: "after", Script: []string{"echo after-restart"}})
	rec := tb.Wait(ctx, t, id)
	assert.Equal(t, gitlab.StatusSuccess, rec.Status, "%s", rec.Trace)
	assert.Contains(t, rec.Trace, "after-restart")
	require.NoError(t, r.Signal(syscall.SIGQUIT))
	require.NoError(t, r.Wait(ctx), "%s", testbed.Plain(r.Log()))
	tb.WaitOnlyTemplates(ctx, t)
}

// The long-lived `run` loop takes more jobs than its limit, runs at most
// `limit` at once, serves them from the warm pool, reports it all in its
// metrics, and on SIGQUIT lets the running job finish, drains the pool and
// exits 0.
func TestRunConcurrentWarmPoolGracefulQuit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const (
		name  = "run-pool"
		limit = 2
		idle  = 2
		jobs  = 5
	)
	tb := runBed(ctx, t, name, limit, testbed.Options{Settings: []string{fmt.Sprintf("pool.idle_count = %d", idle)}})
	tb.SetGlobal(t, "concurrent", "3")
	r := tb.Start(t, "run")

	// The pool fills before any job exists: jobs find warm VMs.
	start := time.Now()
	tb.WaitMetrics(ctx, t, testbed.MetricsAddr, "a full pool", func(m testbed.Metrics) bool {
		return m.Value(mVMs, "runner", name, "state", "idle") == idle
	})
	t.Logf("pool of %d filled %s after start", idle, time.Since(start).Round(time.Millisecond))

	ids := make([]int64, jobs)
	for i := range ids {
		ids[i] = tb.Enqueue(t, gitlab.JobSpec{Name: fmt.Sprintf("job-%d", i), Script: []string{
			`echo "job=$CI_JOB_ID host=$(hostname)"`, "sleep 1",
		}})
	}
	recs := make([]gitlab.JobRecord, jobs)
	warm, cold := 0, 0
	vmNames := map[string]int64{}
	for i, id := range ids {
		recs[i] = tb.Wait(ctx, t, id)
		rec := recs[i]
		require.Equal(t, gitlab.StatusSuccess, rec.Status, "job %d trace:\n%s", id, rec.Trace)
		vm, isWarm := vmOf(rec.Trace)
		require.NotEmpty(t, vm, "job %d's trace says which VM it got:\n%s", id, rec.Trace)
		assert.Contains(t, rec.Trace, fmt.Sprintf("job=%d host=%s", id, vm), "the job's own output, from its own VM")
		if other, dup := vmNames[vm]; dup {
			t.Errorf("jobs %d and %d both ran in %s: max_use_count is 1", other, id, vm)
		}
		vmNames[vm] = id
		if isWarm {
			warm++
		} else {
			cold++
		}
		t.Logf("job %d: %s VM %s, received→finished %s", id, map[bool]string{true: "warm", false: "cold"}[isWarm], vm,
			rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond))
	}
	overlap := testbed.MaxOverlap(recs)
	t.Logf("%d jobs: %d warm, %d cold, at most %d at once, %s from first enqueue to last finish", jobs, warm, cold, overlap,
		recs[jobs-1].FinishedAt.Sub(recs[0].EnqueuedAt).Round(time.Millisecond))
	assert.Equal(t, limit, overlap, "the runner ran up to its limit at once, never more")
	assert.GreaterOrEqual(t, warm, idle, "the jobs that found a full pool took warm VMs")

	// Quiet: the pool refilled, nothing is busy or being destroyed.
	m := tb.WaitMetrics(ctx, t, testbed.MetricsAddr, "the pool refilled and quiet", func(m testbed.Metrics) bool {
		return m.Value(mVMs, "runner", name, "state", "idle") == idle &&
			m.Value(mVMs, "runner", name, "state", "booting") == 0 &&
			m.Value(mVMs, "runner", name, "state", "in_use") == 0 &&
			m.Value(mVMs, "runner", name, "state", "destroying") == 0
	})
	assert.EqualValues(t, warm, m.Count(mReady, "runner", name, "source", "warm"), "ready{source=warm} counts the warm jobs")
	assert.EqualValues(t, cold, m.Count(mReady, "runner", name, "source", "cold"), "ready{source=cold} counts the cold jobs")
	clones := tb.VMCalls(t, "clone")
	assert.EqualValues(t, clones, m.Count(mPhase, "runner", name, "phase", "clone"), "one clone phase per `vm clone`")
	assert.EqualValues(t, clones, m.Count(mPhase, "runner", name, "phase", "ssh"), "every clone became SSH-ready")
	assert.EqualValues(t, clones-idle, m.Count(mPhase, "runner", name, "phase", "destroy"), "every VM but the idle ones was destroyed")
	assert.Zero(t, m.Value(mFailed, "runner", name), "nothing failed")
	assert.Len(t, tb.VMs(ctx, t), 1+idle, "vm list: the template and the idle pool")

	// SIGQUIT while a job sleeps: it finishes, then the pool drains.
	// Upstream's first trace patch comes about 3 s into a job; the sleep
	// outlasts it so that the signal lands mid-script.
	last := tb.Enqueue(t, gitlab.JobSpec{Name: "last", Script: []string{"echo sleeping", "sleep 4", "echo woke-up"}})
	tb.WaitTrace(ctx, t, last, "sleeping")
	quitAt := time.Now()
	require.NoError(t, r.Signal(syscall.SIGQUIT))
	rec := tb.Wait(ctx, t, last)
	require.True(t, rec.FinishedAt.After(quitAt), "SIGQUIT was sent while the job ran")
	assert.Equal(t, gitlab.StatusSuccess, rec.Status, "a job running at SIGQUIT finishes:\n%s", rec.Trace)
	assert.Contains(t, rec.Trace, "woke-up")
	require.NoError(t, r.Wait(ctx), "gitlab-runner exits 0 after SIGQUIT:\n%s", testbed.Plain(r.Log()))
	t.Logf("SIGQUIT → job finished %s, → exit %s", rec.FinishedAt.Sub(quitAt).Round(time.Millisecond), time.Since(quitAt).Round(time.Millisecond))
	assert.Equal(t, []string{tb.Host.Template()}, tb.VMs(ctx, t), "the pool was drained before exit")
	log := testbed.Plain(r.Log())
	assert.Contains(t, log, "Starting graceful shutdown, waiting for builds to finish")
	assert.Contains(t, log, "All executor providers shut down.")
	tb.WaitOnlyTemplates(ctx, t)
}

// SIGTERM is upstream's forceful stop: running jobs are aborted and fail,
// their VMs (and the warm pool) are destroyed before the process exits, so
// the next start has nothing to sweep.
func TestRunSIGTERMAbortsJobs(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const name = "run-term"
	tb := runBed(ctx, t, name, 2, testbed.Options{Settings: []string{"pool.idle_count = 1"}})
	tb.SetGlobal(t, "concurrent", "2")
	r := tb.Start(t, "run")
	ids := []int64{tb.Enqueue(t, longJob("long-1")), tb.Enqueue(t, longJob("long-2"))}
	for _, id := range ids {
		tb.WaitTrace(ctx, t, id, "started")
	}
	require.Len(t, tb.VMs(ctx, t), 3, "the template and both jobs' VMs")
	termAt := time.Now()
	require.NoError(t, r.Signal(syscall.SIGTERM))
	require.NoError(t, r.Wait(ctx), "forceful shutdown that finished in time exits 0:\n%s", testbed.Plain(r.Log()))
	t.Logf("SIGTERM → exit %s", time.Since(termAt).Round(time.Millisecond))
	// Checked at once: nothing may be destroyed after the process is gone.
	assert.Equal(t, []string{tb.Host.Template()}, tb.VMs(ctx, t), "the aborted jobs' VMs and the pool are destroyed before exit")
	for _, id := range ids {
		rec := tb.Wait(ctx, t, id)
		assert.Equal(t, gitlab.StatusFailed, rec.Status, "an aborted job fails:\n%s", rec.Trace)
		assert.Contains(t, rec.Trace, "Job failed: aborted: terminated")
		assert.NotContains(t, rec.Trace, "not-reached")
		assert.True(t, rec.FinishedAt.After(termAt))
		t.Logf("job %d: %s (%s), SIGTERM → final update %s", id, rec.Status, rec.FailureReason, rec.FinishedAt.Sub(termAt).Round(time.Millisecond))
	}
	assert.Contains(t, testbed.Plain(r.Log()), "Starting forceful shutdown")

	// The next start sweeps nothing and works.
	r = tb.Start(t, "run")
	m := tb.WaitMetrics(ctx, t, testbed.MetricsAddr, "the first sweep", func(m testbed.Metrics) bool {
		return m[mSwept] != nil
	})
	assert.Zero(t, m.Value(mSwept, "runner", name), "nothing was left to sweep")
	jobThenQuit(ctx, t, tb, r)
	assert.NotContains(t, testbed.Plain(r.Log()), "orphaned VM")
}

// A runner killed mid-job (a crash, an OOM kill) leaves its VMs running.
// The next start finds them orphaned, destroys them, says so in its log
// and metrics, and takes jobs again.
func TestRunSIGKILLOrphansSweptAtStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const name = "run-kill"
	tb := runBed(ctx, t, name, 2, testbed.Options{Settings: []string{"pool.idle_count = 1"}})
	r := tb.Start(t, "run")
	killed := tb.Enqueue(t, longJob("killed"))
	rec := tb.WaitTrace(ctx, t, killed, "started")
	jobVM, _ := vmOf(rec.Trace)
	require.NotEmpty(t, jobVM, "%s", rec.Trace)
	// The pool refills beside the job: the crash leaves an idle VM too.
	tb.WaitMetrics(ctx, t, testbed.MetricsAddr, "the pool refilled beside the job", func(m testbed.Metrics) bool {
		return m.Value(mVMs, "runner", name, "state", "idle") == 1 && m.Value(mVMs, "runner", name, "state", "in_use") == 1
	})
	r.Kill()
	var left []string
	for _, vm := range tb.VMs(ctx, t) {
		if vm != tb.Host.Template() {
			left = append(left, vm)
		}
	}
	require.Len(t, left, 2, "the job's VM and the idle pool VM outlive the runner")
	require.Contains(t, left, jobVM)

	restart := time.Now()
	r = tb.Start(t, "run")
	for _, vm := range left {
		require.NoError(t, r.WaitLog(ctx, "orphaned VM "+vm+" "), "the start sweep reports %s", vm)
	}
	t.Logf("restart → %d orphans destroyed %s", len(left), time.Since(restart).Round(time.Millisecond))
	assert.Regexp(t, regexp.QuoteMeta("orphaned VM "+jobVM+fmt.Sprintf(" (job %d): destroyed: ok", killed)), testbed.Plain(r.Log()))
	m := tb.WaitMetrics(ctx, t, testbed.MetricsAddr, "the first sweep", func(m testbed.Metrics) bool {
		return m[mSwept] != nil
	})
	assert.EqualValues(t, len(left), m.Value(mSwept, "runner", name), "orphans_swept_total counts the leftovers")
	for _, vm := range tb.VMs(ctx, t) {
		assert.NotContains(t, left, vm, "an orphan is still in vm list")
	}
	cur, _ := tb.GitLab.Job(killed)
	assert.Equal(t, gitlab.StatusRunning, cur.Status, "nobody reported the killed job: GitLab times it out, the runner never does")

	jobThenQuit(ctx, t, tb, r)
}

// Jobs get the project's sources over git from inside their VM, upload
// artifacts from the VM with the template's gitlab-runner, and a later job
// downloads them: the whole data path of a pipeline.
func TestRunGitAndArtifacts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const name = "run-git"
	tb := runBed(ctx, t, name, 2, testbed.Options{Files: map[string]string{
		"README.md":    "# demo\n",
		"src/greeting": "hello from the repository\n",
	}})
	tb.SetGlobal(t, "concurrent", "2")
	r := tb.Start(t, "run")
	sha := tb.Repo.SHA

	showCheckout := []string{"git rev-parse HEAD", "cat src/greeting", "git status --porcelain | wc -l"}
	cloneID := tb.Enqueue(t, gitlab.JobSpec{Name: "clone", Script: showCheckout,
		Variables: []gitlab.Variable{gitlab.Var("GIT_STRATEGY", "clone")}})
	fetchID := tb.Enqueue(t, gitlab.JobSpec{Name: "fetch", Script: showCheckout,
		Variables: []gitlab.Variable{gitlab.Var("GIT_STRATEGY", "fetch")}})
	// Without FF_USE_GIT_NATIVE_CLONE (and git 2.49) upstream's clone is
	// "remove the checkout, then fetch": in a fresh VM both strategies
	// init a repository and fetch the pipeline's refspecs into it.
	for _, id := range []int64{cloneID, fetchID} {
		rec := tb.Wait(ctx, t, id)
		trace := testbed.JobLog(rec.Trace)
		require.Equal(t, gitlab.StatusSuccess, rec.Status, "%s", trace)
		assert.Contains(t, trace, "Fetching changes with git depth set to 20...")
		assert.Contains(t, trace, "Created fresh repository.", "%s: every VM starts without a checkout", rec.Name)
		assert.Contains(t, trace, "Checking out "+sha[:8]+" as detached HEAD (ref is main)")
		assert.Contains(t, trace, "\n"+sha+"\n", "%s checked out the pipeline's exact commit", rec.Name)
		assert.Contains(t, trace, "hello from the repository")
		assert.Contains(t, trace, "\n0\n", "%s: a clean checkout", rec.Name)
		t.Logf("%s: received→finished %s", rec.Name, rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond))
	}

	buildID := tb.Enqueue(t, gitlab.JobSpec{Name: "build", Stage: "build",
		Script:    []string{"mkdir -p out", `echo "built by job $CI_JOB_ID from $(git rev-parse HEAD)" > out/result.txt`},
		Artifacts: &gitlab.Artifacts{Paths: []string{"out/"}}})
	build := tb.Wait(ctx, t, buildID)
	require.Equal(t, gitlab.StatusSuccess, build.Status, "%s", build.Trace)
	assert.Contains(t, build.Trace, "Uploading artifacts for successful job")
	want := fmt.Sprintf("built by job %d from %s\n", buildID, sha)
	require.Len(t, build.Artifacts, 1, "GitLab stored the archive")
	a := build.Artifacts[0]
	assert.Equal(t, "archive", a.Type)
	assert.Equal(t, "zip", a.Format)
	assert.Equal(t, want, testbed.ZipFile(t, a.Path, "out/result.txt"), "the archive holds what the job wrote in its VM")

	useID := tb.Enqueue(t, gitlab.JobSpec{Name: "use", Stage: "test", Dependencies: []int64{buildID},
		Script: []string{"cat out/result.txt"}})
	use := tb.Wait(ctx, t, useID)
	require.Equal(t, gitlab.StatusSuccess, use.Status, "%s", use.Trace)
	assert.Contains(t, use.Trace, fmt.Sprintf("Downloading artifacts for build (%d)", buildID))
	assert.Contains(t, use.Trace, want, "the dependent job, in another VM, read the artifact")

	require.NoError(t, r.Signal(syscall.SIGQUIT))
	require.NoError(t, r.Wait(ctx))
	tb.WaitOnlyTemplates(ctx, t)
}

// A masked variable reaches the job's VM intact but never a log: not the
// trace (upstream masks it), not the runner's own log (even at --debug),
// not the lines the bhyve executor writes into the job log, even where the
// executor names the value itself: an image: made of the variable, ignored
// (allowed_images empty) or refused (not allowed).
func TestRunMaskedVariables(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Value-4711"
	for _, c := range []struct {
		name     string
		settings []string
		status   string
		says     *regexp.Regexp // the executor's line about the image, masked
	}{
		{"ignored-image", nil, gitlab.StatusSuccess, regexp.MustCompile(`WARNING: image "\[MASKED\]" is ignored`)},
		{"refused-image", []string{`allowed_images = ["freebsd-.*"]`}, gitlab.StatusFailed, regexp.MustCompile(`image "\[MASKED\]" is not a valid vm-bhyve VM name`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			tb := runBed(ctx, t, "mask-"+c.name, 1, testbed.Options{Settings: c.settings})
			// --debug: upstream's most talkative log, where a leak would show.
			r := tb.Start(t, "--debug", "run")
			id := tb.Enqueue(t, gitlab.JobSpec{Name: "masked",
				Image:     "$DEPLOY_KEY",
				Variables: []gitlab.Variable{gitlab.MaskedVar("DEPLOY_KEY", secret)},
				Script: []string{
					`echo "key=$DEPLOY_KEY"`,
					`test "$DEPLOY_KEY" = "` + secret + `" && echo key-intact-in-vm`,
					`echo "$DEPLOY_KEY" > key.txt; cat key.txt`,
				}})
			rec := tb.Wait(ctx, t, id)
			trace := testbed.JobLog(rec.Trace)
			require.Equal(t, c.status, rec.Status, "%s", trace)
			assert.Regexp(t, c.says, trace)
			if c.status == gitlab.StatusSuccess {
				assert.Contains(t, trace, "key-intact-in-vm", "the VM got the real value")
				assert.Contains(t, trace, "key=[MASKED]")
			}
			assert.NotContains(t, trace, secret)

			require.NoError(t, r.Signal(syscall.SIGQUIT))
			require.NoError(t, r.Wait(ctx))
			log := testbed.Plain(r.Log())
			assert.Contains(t, log, fmt.Sprintf("job=%d", id), "the runner's log covers the job")
			for _, line := range strings.Split(log, "\n") {
				assert.NotContains(t, line, secret, "the runner's own log")
			}
			tb.WaitOnlyTemplates(ctx, t)
		})
	}
}
