package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// Scale-out as users do it: more runners, more hosts, GitLab's own queue
// handing jobs to whichever runner asks, and nothing of ours coordinating.

// vmSampler records `vm list` every 50 ms: which VMs each sample showed.
type vmSampler struct {
	mu      sync.Mutex
	samples [][]string
	stop    chan struct{}
	done    chan struct{}
}

func sampleVMs(ctx context.Context, t *testing.T, tbs ...*testbed.Testbed) *vmSampler {
	s := &vmSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			var all []string
			for _, tb := range tbs {
				vms, err := tb.JobVMs(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("sampling vm list: %v", err)
					}
					return
				}
				all = append(all, vms...)
			}
			s.mu.Lock()
			s.samples = append(s.samples, all)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(s.Stop)
	return s
}

func (s *vmSampler) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// seen reports whether any sample showed a VM whose name starts with prefix.
func (s *vmSampler) seen(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sample := range s.samples {
		for _, vm := range sample {
			if strings.HasPrefix(vm, prefix) {
				return true
			}
		}
	}
	return false
}

// presence finds the first and last sample that showed VM name and counts
// the samples in between that did not: VM names are never reused, so a
// gap means the VM was taken away and something made it again.
func (s *vmSampler) presence(name string) (first, last, missing int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, last = -1, -1
	for i, sample := range s.samples {
		for _, vm := range sample {
			if vm == name {
				if first < 0 {
					first = i
				}
				last = i
			}
		}
	}
	for i := first; first >= 0 && i <= last; i++ {
		if !slices.Contains(s.samples[i], name) {
			missing++
		}
	}
	return first, last, missing
}

// logLinesWith are the lines of a runner's log that mention s.
func logLinesWith(log, s string) []string {
	var lines []string
	for _, l := range strings.Split(testbed.Plain(log), "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, l)
		}
	}
	return lines
}

// vmPrefix is the start of the name a runner gives the VM of job id
// (jobvm.JobVMName with the default name_prefix; the slot follows).
func vmPrefix(runner string, id int64) string { return fmt.Sprintf("ci-%s-%d-", runner, id) }

// Two [[runners]] in one config.toml, one native and one Custom, share the
// host's vm-bhyve and Kea under one `run` process and take jobs from one
// queue. Each runner's VMs carry its own name; every job succeeds.
func TestScaleTwoRunnersOneRunProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const native, custom = "native-1", "custom-1"
	tb := testbed.New(t, testbed.Options{Runners: []string{native, custom}})
	tb.Register(ctx, t, native, "bhyve", "--limit", "2")
	tb.Register(ctx, t, custom, "custom", append([]string{"--limit", "2"}, tb.CustomArgs(custom)...)...)
	tb.SetGlobal(t, "concurrent", "4")
	tb.SetGlobal(t, "check_interval", "1")
	tb.Start(t, "run")
	vms := sampleVMs(ctx, t, tb)

	th, err := testbed.RunJobs(ctx, tb.GitLab, 8, 2*time.Second)
	vms.Stop()
	require.NoError(t, err)
	t.Logf("8 jobs of 2s through %s (limit 2) and %s (limit 2) in one run: %v (%.1f jobs/min), by runner %v",
		native, custom, th.Wall.Round(time.Millisecond), th.PerMinute(), th.ByRunner)
	assert.Positive(t, th.ByRunner[native], "the native runner took jobs")
	assert.Positive(t, th.ByRunner[custom], "the Custom runner took jobs")
	names := testbed.RunnerNames(tb.GitLab)
	for _, rec := range th.Records {
		runner := names[rec.RunnerID]
		assert.True(t, vms.seen(vmPrefix(runner, rec.ID)), "job %d ran by %s in a VM named for it (%s*)", rec.ID, runner, vmPrefix(runner, rec.ID))
		assert.Contains(t, rec.Trace, "scale job via "+tb.URL())
	}
	tb.WaitOnlyTemplates(ctx, t)
}

// Two `run` processes, each with its own config.toml, on one host: a native
// runner and a Custom one. When one is killed mid-job and restarted, its
// start-up sweep destroys its own orphan and never the other's VM: not the
// other's running VM (whose job still succeeds), and not the other's
// orphan either, which carries another owner's marker and is left for that
// runner's own sweep.
func TestScaleTwoRunProcessesSweepOnlyTheirOwn(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const native, custom = "proc-native", "proc-custom"
	a := testbed.New(t, testbed.Options{Runners: []string{native}})
	b := a.Sibling(t, custom)
	a.Register(ctx, t, native, "bhyve", "--limit", "1")
	b.Register(ctx, t, custom, "custom", append([]string{"--limit", "1"}, b.CustomArgs(custom)...)...)
	for _, tb := range []*testbed.Testbed{a, b} {
		tb.SetGlobal(t, "concurrent", "1")
		tb.SetGlobal(t, "check_interval", "1")
	}
	pa := a.Start(t, "run")
	pb := b.Start(t, "run")
	vms := sampleVMs(ctx, t, a)
	names := func() map[int64]string { return testbed.RunnerNames(a.GitLab) }

	// running enqueues one job per runner (each has limit 1, so each takes
	// one) and waits until both scripts run in their VMs.
	running := func(sleep string) map[string]gitlab.JobRecord {
		t.Helper()
		ids := []int64{
			a.Enqueue(t, gitlab.JobSpec{Name: "long-1", Script: []string{"echo job-started", "sleep " + sleep, "echo job-finished"}}),
			a.Enqueue(t, gitlab.JobSpec{Name: "long-2", Script: []string{"echo job-started", "sleep " + sleep, "echo job-finished"}}),
		}
		byRunner := map[string]gitlab.JobRecord{}
		require.Eventually(t, func() bool {
			for _, id := range ids {
				rec, ok := a.GitLab.Job(id)
				if !ok || !strings.Contains(rec.Trace, "job-started") {
					return false
				}
				byRunner[names()[rec.RunnerID]] = rec
			}
			return true
		}, 2*time.Minute, 100*time.Millisecond, "both jobs start their scripts")
		require.Len(t, byRunner, 2, "each runner took one of the two jobs: %v", byRunner)
		return byRunner
	}
	vmOf := func(runner string, rec gitlab.JobRecord) string {
		t.Helper()
		for _, vm := range a.VMs(ctx, t) {
			if strings.HasPrefix(vm, vmPrefix(runner, rec.ID)) {
				return vm
			}
		}
		t.Fatalf("no VM of %s for job %d in vm list %v", runner, rec.ID, a.VMs(ctx, t))
		return ""
	}

	// 1. Kill the native runner while both jobs run; restart it.
	jobs := running("12")
	nativeVM, customVM := vmOf(native, jobs[native]), vmOf(custom, jobs[custom])
	t.Logf("running: %s (job %d), %s (job %d)", nativeVM, jobs[native].ID, customVM, jobs[custom].ID)
	pa.Kill()
	killedAt := time.Now()
	pa = a.Start(t, "run")
	require.NoError(t, pa.WaitLog(ctx, "orphaned VM "+nativeVM), "the restarted runner sweeps its orphan")
	t.Logf("restarted %s swept %s %v after the kill", native, nativeVM, time.Since(killedAt).Round(time.Millisecond))
	assert.Empty(t, logLinesWith(pa.Log(), customVM), "the native runner's sweep looked at the Custom runner's VM")
	left := a.VMs(ctx, t)
	assert.NotContains(t, left, nativeVM, "the orphan is destroyed")
	assert.Contains(t, left, customVM, "the other runner's running VM is untouched by the sweep")

	rec := a.Wait(ctx, t, jobs[custom].ID)
	assert.Equal(t, gitlab.StatusSuccess, rec.Status, "the other runner's job succeeds: %s", rec.Trace)
	assert.Contains(t, rec.Trace, "job-finished")
	killed, _ := a.GitLab.Job(jobs[native].ID)
	assert.NotEqual(t, gitlab.StatusSuccess, killed.Status, "the killed runner's job cannot have succeeded")
	require.NoError(t, a.GitLab.Cancel(jobs[native].ID))
	_, _, missing := vms.presence(customVM)
	assert.Zero(t, missing, "%s vanished from vm list while its job ran", customVM)

	// 2. Kill both mid-job, restart only the native one: the Custom runner's
	// orphan has a dead holder too, so only the owner marker keeps the
	// native sweep off it.
	jobs = running("30")
	nativeVM, customVM = vmOf(native, jobs[native]), vmOf(custom, jobs[custom])
	pa.Kill()
	pb.Kill()
	pa = a.Start(t, "run")
	require.NoError(t, pa.WaitLog(ctx, "orphaned VM "+nativeVM))
	left = a.VMs(ctx, t)
	assert.NotContains(t, left, nativeVM)
	assert.Contains(t, left, customVM, "the native runner's sweep must not take the Custom runner's orphan")
	assert.Empty(t, logLinesWith(pa.Log(), customVM), "the native runner's sweep looked at the Custom runner's orphan")

	// The Custom runner's orphan is its operator's to sweep, as the README
	// says: `bhyve-executor sweep --force` with that runner's settings.
	out, err := a.Host.Command(ctx, b.ExecutorBin, "--config", b.SettingsPath, "--runner", custom, "sweep", "--force").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, customVM+`\s.*orphan`, string(out))
	assert.NotContains(t, string(out), nativeVM)
	for _, rec := range jobs {
		require.NoError(t, a.GitLab.Cancel(rec.ID))
	}
	vms.Stop()
	a.WaitOnlyTemplates(ctx, t)
}

// Two hosts, each with its own `run`, pull from one fake GitLab reached on
// each host's own bridge: jobs spread across both, each runner and its
// guests use the address they reached, and neither host keeps a VM.
func TestScaleTwoHostsOneQueue(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a := testbed.New(t, testbed.Options{Runners: []string{"host-a"}})
	b := testbed.Join(t, a, testbed.Options{Runners: []string{"host-b"}})
	require.NotEqual(t, a.URL(), b.URL(), "each host reaches GitLab on its own listener")
	for _, x := range []struct {
		tb   *testbed.Testbed
		name string
	}{{a, "host-a"}, {b, "host-b"}} {
		x.tb.Register(ctx, t, x.name, "bhyve", "--limit", "2")
		x.tb.SetGlobal(t, "concurrent", "2")
		x.tb.SetGlobal(t, "check_interval", "1")
		x.tb.Start(t, "run")
	}

	th, err := testbed.RunJobs(ctx, a.GitLab, 6, 2*time.Second)
	require.NoError(t, err)
	t.Logf("6 jobs of 2s through 2 hosts (limit 2 each): %v (%.1f jobs/min), by runner %v",
		th.Wall.Round(time.Millisecond), th.PerMinute(), th.ByRunner)
	assert.Positive(t, th.ByRunner["host-a"], "host A ran jobs")
	assert.Positive(t, th.ByRunner["host-b"], "host B ran jobs")
	url := map[string]string{"host-a": a.URL(), "host-b": b.URL()}
	names := testbed.RunnerNames(a.GitLab)
	for _, rec := range th.Records {
		// The guest cloned and ran against the URL its own host reached.
		assert.Contains(t, rec.Trace, "scale job via "+url[names[rec.RunnerID]], "job %d", rec.ID)
	}
	a.WaitOnlyTemplates(ctx, t)
	b.WaitOnlyTemplates(ctx, t)
}

// ScaleOut, what `make bench` measures, runs the same batch through one
// host and through two and records who took what; here with a small batch,
// for correctness only (the speed figure is the bench's).
func TestScaleOutMeasurement(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	runner, executor := testbed.Binaries(t)
	res, err := testbed.ScaleOut(ctx, testbed.ScaleOptions{Jobs: 4, Sleep: time.Second, Concurrent: 2, Reps: 1,
		RunnerBin: runner, ExecutorBin: executor, Progress: t.Logf})
	require.NoError(t, err)
	require.Len(t, res.One, 1)
	require.Len(t, res.Two, 1)
	one, two := res.One[0], res.Two[0]
	assert.Equal(t, map[string]int{"scale-a": 4}, one.ByRunner, "with one host polling, it takes every job")
	assert.Positive(t, two.ByRunner["scale-a"], "with two hosts, the first takes jobs")
	assert.Positive(t, two.ByRunner["scale-b"], "with two hosts, the second takes jobs")
	assert.Equal(t, 4, two.ByRunner["scale-a"]+two.ByRunner["scale-b"])
	t.Logf("4 jobs of 1s: 1 host %v, 2 hosts %v (ratio %.2fx)", one.Wall.Round(time.Millisecond), two.Wall.Round(time.Millisecond),
		one.Wall.Seconds()/two.Wall.Seconds())
}
