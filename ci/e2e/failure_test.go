package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// How jobs fail, through upstream's real `run` loop, for both front-ends.
// Upstream decides retries, failure reasons, timeouts and cancellation; the
// executor decides what it reports and that no VM is left.

const failRunner = "runner-1"

// startRunner brings up a testbed of its own for one subtest, registers
// failRunner through fe and starts `gitlab-runner run` as an operator's
// service does.
func startRunner(ctx context.Context, t *testing.T, fe testbed.FrontEnd, o testbed.Options) *testbed.Testbed {
	t.Helper()
	o.Runners = []string{failRunner}
	tb := testbed.New(t, o)
	tb.RegisterFrontEnd(ctx, t, fe, failRunner)
	tb.Start(t, "run")
	return tb
}

// forEachFrontEnd runs body as a parallel subtest per front-end, each
// with a deadline.
func forEachFrontEnd(t *testing.T, body func(ctx context.Context, t *testing.T, fe testbed.FrontEnd)) {
	t.Parallel()
	for _, fe := range testbed.FrontEnds {
		t.Run(fe.Name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			body(ctx, t, fe)
		})
	}
}

// sleepToken is a `sleep` argument no other process on the machine has, so
// the job's sleep can be found among the machine's processes.
func sleepToken() string { return fmt.Sprintf("600.%09d", rand.IntN(1e9)) }

// linesWith counts the job log lines containing s.
func linesWith(trace, s string) int {
	return countLines(trace, func(l string) bool { return strings.Contains(l, s) })
}

// linesStartingWith counts the job log lines starting with prefix.
func linesStartingWith(trace, prefix string) int {
	return countLines(trace, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func countLines(trace string, match func(string) bool) int {
	n := 0
	for _, l := range testbed.TraceLines(trace) {
		if match(l) {
			n++
		}
	}
	return n
}

// lastLine is the job log's final line: upstream's "ERROR: Job failed..."
// or "Job succeeded".
func lastLine(trace string) string {
	lines := testbed.TraceLines(trace)
	return lines[len(lines)-1]
}

// A failing script is the user's failure: its exit code reaches GitLab and
// after_script still runs.
func TestFailureScriptExitCode(t *testing.T) {
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		tb := startRunner(ctx, t, fe, testbed.Options{})
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "exit-42",
			Script:      []string{"echo BEFORE-EXIT", "exit 42", "echo NOT-REACHED"},
			AfterScript: []string{"echo AFTER-SCRIPT-RAN"}})
		rec := tb.Wait(ctx, t, id)
		trace := testbed.Plain(rec.Trace)

		assert.Equal(t, gitlab.StatusFailed, rec.Status)
		assert.Equal(t, "script_failure", rec.FailureReason)
		assert.Equal(t, 42, rec.ExitCode)
		assert.True(t, testbed.HasTraceLine(rec.Trace, "BEFORE-EXIT"), "trace:\n%s", trace)
		assert.False(t, testbed.HasTraceLine(rec.Trace, "NOT-REACHED"), "the script stops at its failing line")
		assert.True(t, testbed.HasTraceLine(rec.Trace, "AFTER-SCRIPT-RAN"), "after_script runs after a failed script")
		assert.Contains(t, lastLine(rec.Trace), "42")
		assert.Equal(t, 1, tb.VMCalls(t, "clone"), "one VM, no retries")
		t.Logf("%s: received -> finished %s; last line %q", fe.Name,
			rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond), lastLine(rec.Trace))
		tb.WaitOnlyTemplates(ctx, t)
	})
}

// A job over its timeout: upstream ends it as job_execution_timeout, the
// executor kills the script's processes and destroys the VM.
func TestFailureJobTimeout(t *testing.T) {
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		tb := startRunner(ctx, t, fe, testbed.Options{})
		tok := sleepToken()
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "too-slow", Timeout: 4 * time.Second,
			Script: []string{"echo SLEEPING", "sleep " + tok, "echo WOKE-UP"}})

		seen := testbed.WaitGuestProcess(ctx, t, tok)
		rec := tb.Wait(ctx, t, id)
		gone := testbed.WaitGuestProcessGone(ctx, t, tok)
		vmsGone := tb.JobVMsGoneAt(ctx, t)
		trace := testbed.Plain(rec.Trace)

		assert.Equal(t, gitlab.StatusFailed, rec.Status)
		assert.Equal(t, "job_execution_timeout", rec.FailureReason)
		assert.True(t, testbed.HasTraceLine(rec.Trace, "SLEEPING"), "trace:\n%s", trace)
		assert.False(t, testbed.HasTraceLine(rec.Trace, "WOKE-UP"))
		assert.Contains(t, lastLine(rec.Trace), "execution took longer than 4s")
		// The job's sleep dies with the stage, not with the runner's
		// teardown 600 s later; the VM follows.
		assert.Less(t, gone.Sub(rec.FinishedAt), 15*time.Second, "the script's process outlived the job by this much")
		t.Logf("%s: sleep seen %s after received; job finished %s after that; sleep gone %s and job VMs gone %s after the final update",
			fe.Name, seen.Sub(rec.ReceivedAt).Round(time.Millisecond), rec.FinishedAt.Sub(seen).Round(time.Millisecond),
			gone.Sub(rec.FinishedAt).Round(time.Millisecond), vmsGone.Sub(rec.FinishedAt).Round(time.Millisecond))
	})
}

// Cancel in GitLab mid-script: the job ends canceled, the script goes no
// further, its process dies, after_script runs and the VM is destroyed
// promptly.
//
// The runner learns of a cancel only from a response to its trace PATCH or
// job update: it PATCHes when there is new output, and a silent job is
// touched only every 30 s (upstream common.MinTraceForceSendInterval), so
// the script keeps printing and "promptly" is measured from the cancel.
func TestFailureCancelFromGitLab(t *testing.T) {
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		tb := startRunner(ctx, t, fe, testbed.Options{})
		// The ticker's $0 is the token: its command line is unique and
		// lasts the whole loop, while each `sleep 1` is short-lived.
		tok := "ticker-" + sleepToken()
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "canceled",
			Script: []string{"echo MARKER-1",
				`bash -c 'for i in $(seq 600); do echo "tick $i"; sleep 1; done' ` + tok,
				"echo MARKER-2"},
			AfterScript: []string{"echo AFTER-SCRIPT-RAN"}})

		tb.WaitTrace(ctx, t, id, "tick 1")
		testbed.WaitGuestProcess(ctx, t, tok)
		require.NoError(t, tb.GitLab.Cancel(id))
		rec := tb.Wait(ctx, t, id)
		gone := testbed.WaitGuestProcessGone(ctx, t, tok)
		vmsGone := tb.JobVMsGoneAt(ctx, t)
		trace := testbed.Plain(rec.Trace)

		assert.Equal(t, gitlab.StatusCanceled, rec.Status)
		// Upstream reports job_canceled, which GitLab does not list in
		// features.failure_reasons and which has no compatibility
		// mapping, so it goes out as unknown_failure
		// (common/failure_reason_mapper.go); the job's status is
		// GitLab's own canceled either way.
		require.NotContains(t, gitlab.DefaultFailureReasons, "job_canceled")
		assert.Equal(t, "unknown_failure", rec.FailureReason)
		assert.Equal(t, gitlab.StatusFailed, rec.State, "the runner's final update")
		assert.True(t, testbed.HasTraceLine(rec.Trace, "MARKER-1"), "trace:\n%s", trace)
		assert.False(t, testbed.HasTraceLine(rec.Trace, "MARKER-2"), "the script went on after the cancel")
		assert.True(t, testbed.HasTraceLine(rec.Trace, "AFTER-SCRIPT-RAN"), "after_script runs after a cancel (upstream Build.executeScript)")
		assert.Less(t, gone.Sub(rec.CancelAt), 15*time.Second, "the script's process outlived the cancel by this much")
		assert.Less(t, vmsGone.Sub(rec.CancelAt), 20*time.Second, "the job VM outlived the cancel by this much")
		t.Logf("%s: cancel -> final update %s, -> ticker gone %s, -> job VMs gone %s; last line %q",
			fe.Name, rec.FinishedAt.Sub(rec.CancelAt).Round(time.Millisecond), gone.Sub(rec.CancelAt).Round(time.Millisecond),
			vmsGone.Sub(rec.CancelAt).Round(time.Millisecond), lastLine(rec.Trace))
	})
}

// An image: the operator did not allow is a mistake in the job or in
// bhyve.toml; retrying cannot fix it. The native executor says so
// (a *BuildError ends upstream's retries); the Custom executor protocol has
// no exit code for it, so upstream retries and reports a system failure,
// but every attempt's message says what to fix.
func TestFailureImageNotAllowed(t *testing.T) {
	// GitLab does not list runner_configuration_error in
	// features.failure_reasons, so upstream maps it to script_failure
	// (common/network.go failureReasonsCompatibilityMap).
	require.NotContains(t, gitlab.DefaultFailureReasons, "runner_configuration_error")
	// preparationFailed: upstream logs "Preparation failed" after each
	// attempt it retries (also after the last), never for a *BuildError.
	want := map[string]struct {
		attempts, preparationFailed int
		reason                      string
	}{
		"native": {attempts: 1, preparationFailed: 0, reason: "script_failure"},
		"custom": {attempts: 3, preparationFailed: 3, reason: "runner_system_failure"},
	}
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		tb := startRunner(ctx, t, fe, testbed.Options{Settings: []string{`allowed_images = ["freebsd-1[45]", "ports-.*"]`}})
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "ubuntu", Image: "ubuntu-24", Script: []string{"echo RAN"}})
		rec := tb.Wait(ctx, t, id)
		trace := testbed.Plain(rec.Trace)
		t.Logf("%s: failure_reason %q, received -> finished %s, last line %q", fe.Name, rec.FailureReason,
			rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond), lastLine(rec.Trace))

		assert.Equal(t, gitlab.StatusFailed, rec.Status)
		assert.Equal(t, want[fe.Name].reason, rec.FailureReason)
		reason := `image "ubuntu-24" is not allowed`
		// One line per attempt; the final "Job failed" line may repeat it.
		attempts := 0
		for _, l := range testbed.TraceLines(rec.Trace) {
			if strings.Contains(l, reason) && !strings.Contains(l, "Job failed") {
				attempts++
				assert.Contains(t, l, `"freebsd-1[45]"`, "the message lists the allowed patterns")
				assert.Contains(t, l, `"ports-.*"`, "the message lists the allowed patterns")
				assert.Contains(t, l, "allowed_images", "the message names the key to change")
			}
		}
		assert.Equal(t, want[fe.Name].attempts, attempts, "prepare attempts:\n%s", trace)
		assert.Equal(t, want[fe.Name].preparationFailed, linesWith(trace, "Preparation failed"), "upstream's retries")
		assert.Zero(t, tb.VMCalls(t, "clone"), "nothing is cloned for a refused image")
		assert.False(t, testbed.HasTraceLine(rec.Trace, "RAN"), "no script ran")
		tb.WaitOnlyTemplates(ctx, t)
	})
}

// With allowed_images empty, a job's image: (meant for Docker runners) is
// ignored with a warning and the job runs in the default template.
func TestFailureImageIgnoredWithoutAllowedImages(t *testing.T) {
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		tb := startRunner(ctx, t, fe, testbed.Options{})
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "node", Image: "node:20", Script: []string{"echo RAN-IN-$(hostname)"}})
		rec := tb.Wait(ctx, t, id)
		trace := testbed.Plain(rec.Trace)

		assert.Equal(t, gitlab.StatusSuccess, rec.Status, "trace:\n%s", trace)
		assert.Equal(t, 1, linesWith(trace, `WARNING: image "node:20" is ignored: allowed_images is empty, so the job runs in the default template "`+tb.Host.Template()+`"`), "trace:\n%s", trace)
		assert.Contains(t, trace, "Cloning "+tb.Host.Template()+"@"+tb.Host.Snapshot()+" as ")
		// The guest's host name is the job VM's name (name_prefix, runner,
		// job ID, slot).
		assert.Equal(t, 1, linesStartingWith(rec.Trace, fmt.Sprintf("RAN-IN-ci-%s-%d-", failRunner, id)), "the script ran in the job VM:\n%s", trace)
		tb.WaitOnlyTemplates(ctx, t)
	})
}

// A guest that never answers SSH is a host problem that may pass: upstream
// retries prepare (three attempts, each a fresh VM) and reports
// runner_system_failure; every VM is destroyed.
func TestFailureSystemFailureIsRetried(t *testing.T) {
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		tb := startRunner(ctx, t, fe, testbed.Options{Settings: []string{`boot_timeout = "3s"`}})
		require.NoError(t, tb.Host.SetFault(tb.Host.Template(), sim.Fault{NoSSHD: true}))
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "no-sshd", Script: []string{"echo RAN"}})
		rec := tb.Wait(ctx, t, id)
		trace := testbed.Plain(rec.Trace)
		t.Logf("%s: received -> finished %s; last line %q", fe.Name,
			rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond), lastLine(rec.Trace))

		assert.Equal(t, gitlab.StatusFailed, rec.Status)
		assert.Equal(t, "runner_system_failure", rec.FailureReason)
		assert.Equal(t, 3, tb.VMCalls(t, "clone"), "three prepare attempts, a fresh VM each")
		assert.Equal(t, 3, linesWith(trace, "Cloning "+tb.Host.Template()+"@"), "trace:\n%s", trace)
		assert.Equal(t, 3, linesWith(trace, "Preparation failed"), "upstream retried each")
		assert.Contains(t, trace, "boot_timeout", "the message names the setting that ran out")
		assert.False(t, testbed.HasTraceLine(rec.Trace, "RAN"), "no script ran")
		tb.WaitOnlyTemplates(ctx, t)
	})
}

// vm-bhyve giving up before the guest boots (a uefi-custom loader without
// its firmware) fails the same way every time. The native executor stops at
// the first attempt; the Custom executor protocol cannot say "do not retry",
// so upstream makes three. Both show vm-bhyve's reason.
func TestFailurePermanentFailure(t *testing.T) {
	// preparationFailed as in TestFailureImageNotAllowed.
	want := map[string]struct{ attempts, preparationFailed int }{
		"native": {attempts: 1, preparationFailed: 0},
		"custom": {attempts: 3, preparationFailed: 3},
	}
	forEachFrontEnd(t, func(ctx context.Context, t *testing.T, fe testbed.FrontEnd) {
		const template = "nofirmware"
		tb := startRunner(ctx, t, fe, testbed.Options{Settings: []string{fmt.Sprintf("template = %q", template)}})
		require.NoError(t, tb.Host.AddTemplate(template, tb.Host.Snapshot(), sim.WithGuestConfig("uefi-custom", "", "")))
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "no-firmware", Script: []string{"echo RAN"}})
		rec := tb.Wait(ctx, t, id)
		trace := testbed.Plain(rec.Trace)
		t.Logf("%s: received -> finished %s; clones %d; last line %q", fe.Name,
			rec.FinishedAt.Sub(rec.ReceivedAt).Round(time.Millisecond), tb.VMCalls(t, "clone"), lastLine(rec.Trace))

		assert.Equal(t, gitlab.StatusFailed, rec.Status)
		assert.Equal(t, "runner_system_failure", rec.FailureReason)
		assert.Equal(t, want[fe.Name].attempts, tb.VMCalls(t, "clone"), "prepare attempts, trace:\n%s", trace)
		assert.Equal(t, want[fe.Name].preparationFailed, linesWith(trace, "Preparation failed"), "upstream's retries")
		assert.Contains(t, trace, "fatal; unable to locate firmware "+tb.Host.VMDir()+"/.config/BHYVE_UEFI.fd", "vm-bhyve's reason")
		assert.False(t, testbed.HasTraceLine(rec.Trace, "RAN"), "no script ran")
		tb.WaitOnlyTemplates(ctx, t, tb.Host.Template(), template)
		assert.True(t, slices.Contains(tb.VMs(ctx, t), template), "the template itself is never touched")
	})
}
