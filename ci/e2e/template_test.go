package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

const tmplName = "fbsd"

// templateTestbed is a host with settings for building a template; extra
// are more bhyve.toml lines, kept when the build's lines are added.
func templateTestbed(t *testing.T, extra ...string) (*testbed.Testbed, []string, string) {
	t.Helper()
	dir := t.TempDir()
	settings := append(testbed.TemplateSettings(dir), extra...)
	tb := testbed.New(t, testbed.Options{Settings: settings})
	tb.PinnedKnownHosts(t, dir)
	return tb, settings, dir
}

// buildTemplate runs `template build` from the image file with the host's
// own gitlab-runner (the sandbox build) as the guest's, adds the settings
// lines it prints to bhyve.toml, and returns the snapshot it took.
func buildTemplate(ctx context.Context, t *testing.T, tb *testbed.Testbed, settings []string) string {
	t.Helper()
	img := tb.CloudImage(t)
	out, err := tb.Operator(ctx, t, fixture.Runner, "template", "build", tmplName, "--image", img, "--runner-binary", tb.RunnerBin)
	require.NoError(t, err, "template build: %s", out)
	snap := testbed.SnapshotTaken(out, tmplName)
	require.NotEmpty(t, snap, "template build reports its snapshot: %s", out)
	assert.Contains(t, out, "provision: gitlab-runner 19.4.0", "the host's runner was installed in the guest")
	printed := testbed.PrintedSettings(out)
	require.Equal(t, []string{`template = "` + tmplName + `"`, `snapshot = "latest"`}, printed, "the lines build tells the operator to add")
	tb.WriteSettings(t, append(settings, printed...)...)
	return snap
}

// startNativeRunner registers the runner for the native executor and starts
// upstream's run loop.
func startNativeRunner(ctx context.Context, t *testing.T, tb *testbed.Testbed, concurrent int) *testbed.Process {
	t.Helper()
	tb.Register(ctx, t, fixture.Runner, "bhyve")
	tb.SetGlobal(t, "concurrent", fmt.Sprint(concurrent))
	tb.SetGlobal(t, "check_interval", "1")
	return tb.Start(t, "run", "--working-directory", tb.Dir)
}

// The first "Done when": from an image file, `template build` and
// then a job through the native executor, with nothing done by hand in
// between. The job runs as the user the provisioning created, with the
// host's gitlab-runner, git and a writable cache in the guest.
func TestTemplateBuildThenNativeJob(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tb, settings, _ := templateTestbed(t)

	start := time.Now()
	snap := buildTemplate(ctx, t, tb, settings)
	t.Logf("template build took %s", time.Since(start).Round(time.Millisecond))

	p := startNativeRunner(ctx, t, tb, 1)
	id := tb.Enqueue(t, gitlab.JobSpec{Name: "on-built-template", Script: []string{
		"id -un", "gitlab-runner --version", "git --version", "test -w /cache && echo cache writable", "cat README.md",
	}})
	rec := tb.Wait(ctx, t, id)
	log := testbed.JobLog(rec.Trace)
	t.Logf("job %d: %s after %s\n%s", id, rec.Status, rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond), log)
	require.Equal(t, gitlab.StatusSuccess, rec.Status, "runner log:\n%s", testbed.Plain(p.Log()))
	assert.Contains(t, log, "Cloning "+tmplName+"@"+snap+" as ", "the job's VM is a clone of the build")
	assert.Regexp(t, `(?m)^gitlab-runner$`, log, "the job runs as the user the provisioning created")
	assert.Regexp(t, `(?m)^Version:      19\.4\.0$`, log, "the guest's gitlab-runner is the host's")
	assert.Regexp(t, `(?m)^git version `, log)
	assert.Regexp(t, `(?m)^cache writable$`, log)
	assert.Regexp(t, `(?m)^# demo$`, log, "the checkout happened in the guest")

	out, err := tb.Operator(ctx, t, fixture.Runner, "template", "check", tmplName, "--runner-binary", tb.RunnerBin)
	require.NoError(t, err, "template check: %s", out)
	assert.Contains(t, out, "all checks passed")

	require.NoError(t, p.Signal(syscall.SIGQUIT))
	require.NoError(t, p.Wait(ctx))
	tb.WaitOnlyTemplates(ctx, t, tb.Host.Template(), tmplName)
}

var (
	warmVMRE    = regexp.MustCompile(`Using warm VM (\S+) at `)
	cloningAsRE = regexp.MustCompile(`Cloning ` + tmplName + `@(\S+) as (\S+)`)
)

// clonedFrom is the snapshot the VM of a job was cloned from and the VM's
// name: the trace's "Cloning TEMPLATE@SNAP as NAME" for a VM booted for
// the job; for a warm VM ("Using warm VM NAME") the pool's line with that
// name in the runner's log.
func clonedFrom(t *testing.T, trace, runnerLog string) (snap, vm string) {
	t.Helper()
	if m := cloningAsRE.FindStringSubmatch(trace); m != nil {
		return m[1], m[2]
	}
	m := warmVMRE.FindStringSubmatch(trace)
	require.NotNil(t, m, "the trace names the job's VM:\n%s", trace)
	for _, c := range cloningAsRE.FindAllStringSubmatch(runnerLog, -1) {
		if c[2] == m[1] {
			return c[1], m[1]
		}
	}
	t.Fatalf("the runner log has no clone of warm VM %s:\n%s", m[1], runnerLog)
	return "", ""
}

// waitTrace waits until job id's trace contains s.
func waitTrace(ctx context.Context, t *testing.T, tb *testbed.Testbed, id int64, s string) time.Time {
	t.Helper()
	for {
		rec, _ := tb.GitLab.Job(id)
		if strings.Contains(rec.Trace, s) {
			return time.Now()
		}
		if rec.Status == gitlab.StatusSuccess || rec.Status == gitlab.StatusFailed || rec.Status == gitlab.StatusCanceled {
			t.Fatalf("job %d ended %s before printing %q:\n%s", id, rec.Status, s, rec.Trace)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d never printed %q: %v\n%s", id, s, ctx.Err(), rec.Trace)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// The second "Done when": `template rotate` while a job runs on
// the old snapshot. The rotation boots the template itself, re-provisions
// it (the operator's script leaves a marker), stops it and snapshots it;
// the running job finishes on the old snapshot, the next job and the warm
// pool use the new one, and the old snapshot is destroyed only once its
// last clone is gone (ZFS refuses before; nothing is forced).
func TestTemplateRotateWhileAJobRuns(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	tb, settings, dir := templateTestbed(t, "pool.idle_count = 1")
	t0 := time.Now()
	at := func(what string) time.Time {
		now := time.Now()
		t.Logf("EVENT +%7.3fs %s %s", now.Sub(t0).Seconds(), now.UTC().Format("15:04:05.000"), what)
		return now
	}

	oldSnap := buildTemplate(ctx, t, tb, settings)
	at("template build done: " + tmplName + "@" + oldSnap)
	p := startNativeRunner(ctx, t, tb, 2)

	const marker = "/etc/bhyve-ci-rotation"
	show := "cat " + marker + " 2>/dev/null || echo 'marker: none'"
	job1 := tb.Enqueue(t, gitlab.JobSpec{Name: "long-on-old", Script: []string{
		show, "echo job1 sleeping", "sleep 25", show, "echo job1 done",
	}})
	waitTrace(ctx, t, tb, job1, "job1 sleeping")
	rec1, _ := tb.GitLab.Job(job1)
	at(fmt.Sprintf("job1 (%d) running its script (received %s)", job1, rec1.ReceivedAt.UTC().Format("15:04:05.000")))
	oldClones := func() []string {
		var out []string
		for _, n := range tb.VMs(ctx, t) {
			if tb.CloneOrigin(ctx, t, n) == tmplName+"@"+oldSnap {
				out = append(out, n)
			}
		}
		return out
	}
	require.NotEmpty(t, oldClones(), "job1's VM is a clone of %s", oldSnap)
	poolVMs := func(snap string) []string {
		var out []string
		for _, n := range tb.VMs(ctx, t) {
			if strings.HasPrefix(n, "ci-"+fixture.Runner+"-p") && tb.CloneOrigin(ctx, t, n) == tmplName+"@"+snap {
				out = append(out, n)
			}
		}
		return out
	}
	var oldIdle []string
	// Upstream takes a slot (here: the idle VM) for each job request it
	// makes, so the pool boots another for idle_count: one or two VMs.
	require.Eventually(t, func() bool { oldIdle = poolVMs(oldSnap); return len(oldIdle) >= 1 }, 60*time.Second, 100*time.Millisecond,
		"pool.idle_count = 1: an idle VM of the first build waits")
	at(fmt.Sprintf("pool VMs %v (clones of %s) are up", oldIdle, oldSnap))

	script := filepath.Join(dir, "rotate.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nset -eu\necho \"marker: rotated $(date -u +%H:%M:%S)\" > "+marker+"\necho provision: marker written\n"), 0o644))
	rotStart := at("template rotate starts")
	out, err := tb.Operator(ctx, t, fixture.Runner, "template", "rotate", tmplName, "--provision", script, "--keep", "1", "--runner-binary", tb.RunnerBin)
	rotEnd := at("template rotate done")
	require.NoError(t, err, "template rotate: %s", out)
	newSnap := testbed.SnapshotTaken(out, tmplName)
	require.NotEmpty(t, newSnap)
	require.Greater(t, newSnap, oldSnap)
	assert.Contains(t, out, "booting template "+tmplName+"\n", "the template itself is booted")
	assert.Contains(t, out, "as root in "+tmplName+"\n", "and provisioned, not a clone")
	assert.Contains(t, out, "provision: marker written")
	assert.Contains(t, out, "kept "+tmplName+"@"+oldSnap+": clones (running jobs) still depend on it",
		"ZFS refused to destroy the snapshot job1 runs on, and rotate did not force it")
	assert.Equal(t, []string{oldSnap, newSnap}, tb.Snapshots(t, tmplName))
	rec1, _ = tb.GitLab.Job(job1)
	require.Equal(t, gitlab.StatusRunning, rec1.Status, "job1 is still running after the rotation (took %s)", rotEnd.Sub(rotStart))
	assert.Contains(t, tb.Snapshots(t, tmplName), oldSnap)

	require.Eventually(t, func() bool {
		vms := tb.VMs(ctx, t)
		return !slices.ContainsFunc(oldIdle, func(n string) bool { return slices.Contains(vms, n) })
	}, 30*time.Second, 100*time.Millisecond, "the pool VMs of the old build are retired once a newer build exists")
	at(fmt.Sprintf("pool VMs %v of the old build retired", oldIdle))
	rec1, _ = tb.GitLab.Job(job1)
	require.Equal(t, gitlab.StatusRunning, rec1.Status, "the retirement happened while job1 still ran")

	job2 := tb.Enqueue(t, gitlab.JobSpec{Name: "next-on-new", Script: []string{show}})
	rec2 := tb.Wait(ctx, t, job2)
	at(fmt.Sprintf("job2 (%d) received %s, finished %s: %s", job2, rec2.ReceivedAt.UTC().Format("15:04:05.000"), rec2.FinishedAt.UTC().Format("15:04:05.000"), rec2.Status))
	rec1 = tb.Wait(ctx, t, job1)
	at(fmt.Sprintf("job1 (%d) finished %s: %s", job1, rec1.FinishedAt.UTC().Format("15:04:05.000"), rec1.Status))
	runnerLog := testbed.Plain(p.Log())
	log1, log2 := testbed.JobLog(rec1.Trace), testbed.JobLog(rec2.Trace)
	t.Logf("job1 log:\n%s\njob2 log:\n%s", log1, log2)

	require.Equal(t, gitlab.StatusSuccess, rec1.Status, "runner log:\n%s", runnerLog)
	require.Equal(t, gitlab.StatusSuccess, rec2.Status, "runner log:\n%s", runnerLog)
	snap1, vm1 := clonedFrom(t, log1, runnerLog)
	snap2, vm2 := clonedFrom(t, log2, runnerLog)
	t.Logf("job1 ran in %s (cloned from %s), job2 in %s (cloned from %s)", vm1, snap1, vm2, snap2)
	assert.Equal(t, oldSnap, snap1, "job1 ran on the old build")
	assert.Equal(t, newSnap, snap2, "the job after the rotation runs on the new build")
	assert.Len(t, regexp.MustCompile(`(?m)^marker: none$`).FindAllString(log1, -1), 2, "job1's VM kept the old build to its end")
	assert.Regexp(t, `(?m)^marker: rotated `, log2, "job2's VM carries what the rotation provisioned")
	assert.True(t, rec2.ReceivedAt.Before(rec1.FinishedAt), "job2 started (%s) while job1 still ran on the old build (until %s)", rec2.ReceivedAt, rec1.FinishedAt)
	assert.True(t, rotEnd.Before(rec1.FinishedAt))

	// The warm pool follows: the idle VM of the old build is retired and
	// replaced by a clone of the new one.
	require.Eventually(t, func() bool { return len(oldClones()) == 0 }, 60*time.Second, 200*time.Millisecond,
		"job1's VM and the pool's idle VMs of the old build are destroyed")
	at("no clone of " + oldSnap + " is left")
	require.Eventually(t, func() bool { return len(poolVMs(newSnap)) > 0 }, 60*time.Second, 200*time.Millisecond,
		"the pool keeps an idle VM of the new build")
	for _, l := range strings.Split(runnerLog, "\n") {
		if strings.Contains(l, "pool") {
			t.Logf("runner: %s", l)
		}
	}

	out, err = tb.Operator(ctx, t, fixture.Runner, "template", "prune", tmplName, "--keep", "1")
	at("template prune done: old snapshot destroyed")
	require.NoError(t, err, "template prune: %s", out)
	assert.Contains(t, out, "destroyed "+tmplName+"@"+oldSnap)
	assert.Equal(t, []string{newSnap}, tb.Snapshots(t, tmplName), "the newest --keep 1 build is kept")

	require.NoError(t, p.Signal(syscall.SIGQUIT))
	require.NoError(t, p.Wait(ctx))
	tb.WaitOnlyTemplates(ctx, t, tb.Host.Template(), tmplName)
}
