package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// resourcesBed is a testbed whose jobs may ask for up to 4G, with a runner
// registered for the native executor or the Custom one, running.
func resourcesBed(t *testing.T, ctx context.Context, executor string) (*testbed.Testbed, *testbed.Process) {
	t.Helper()
	tb := testbed.New(t, testbed.Options{Settings: []string{`max_memory = "4G"`, `memory_reserve = "1G"`}})
	if executor == "custom" {
		tb.Register(ctx, t, "sim-runner", "custom", tb.CustomArgs("sim-runner")...)
	} else {
		tb.Register(ctx, t, "sim-runner", "bhyve")
	}
	tb.SetGlobal(t, "check_interval", "1")
	return tb, tb.Start(t, "run")
}

// TestJobSizesItsVM: through upstream's run loop, a job with BHYVE_MEMORY:
// 2G runs in a VM whose conf and `vm info` say 2G while it runs, and one
// asking above max_memory fails with the cap named in its trace.
func TestJobSizesItsVM(t *testing.T) {
	for _, executor := range []string{"bhyve", "custom"} {
		t.Run(executor, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			tb, _ := resourcesBed(t, ctx, executor)

			id := tb.Enqueue(t, gitlab.JobSpec{Name: "big", Script: []string{"touch /tmp/started", "sleep 4"},
				Variables: []gitlab.Variable{gitlab.Var("BHYVE_MEMORY", "2G")}})
			info := waitVMInfo(ctx, t, tb)
			assert.Contains(t, info, "\n  memory: 2G\n", "vm info of the running job VM")
			assert.Contains(t, info, "\n  cpu: 2\n", "cpu stays the template's")
			rec := tb.Wait(ctx, t, id)
			assert.Equal(t, "success", rec.Status, rec.Trace)
			assert.Contains(t, rec.Trace, "VM size: 2 CPUs, 2G memory (BHYVE_MEMORY; the rest is template tmpl's)")

			id = tb.Enqueue(t, gitlab.JobSpec{Name: "greedy", Script: []string{"echo must not run"},
				Variables: []gitlab.Variable{gitlab.Var("BHYVE_MEMORY", "8G")}})
			rec = tb.Wait(ctx, t, id)
			t.Logf("above the cap: status %s, failure_reason %s", rec.Status, rec.FailureReason)
			assert.Equal(t, "failed", rec.Status)
			assert.Contains(t, rec.Trace, `BHYVE_MEMORY 8G is above max_memory 4G (`+tb.SettingsPath+`: defaults.max_memory); ask for at most 4G, or raise max_memory`)
			assert.NotContains(t, rec.Trace, "must not run\n")
			assert.NotContains(t, rec.Trace, "Cloning", "nothing is cloned for a refused request")
			tb.WaitOnlyTemplates(ctx, t)
		})
	}
}

// waitVMInfo returns `vm info` of the first job VM that shows up running.
func waitVMInfo(ctx context.Context, t *testing.T, tb *testbed.Testbed) string {
	t.Helper()
	for ctx.Err() == nil {
		for _, name := range tb.VMs(ctx, t) {
			if !strings.HasPrefix(name, "ci-") {
				continue
			}
			r, err := tb.Host.VM(ctx, "info", name)
			if err == nil && strings.Contains(r.Stdout, "state: running") {
				return r.Stdout
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no job VM ran")
	return ""
}

// TestAdmissionWhenTheHostIsShortOfMemory: the template's VMs have 1G; with
// 1.5G free and a 1G reserve none fits. The native executor requests no
// job until memory frees up, then runs it; the Custom executor fails the
// prepare with the reason in the trace.
func TestAdmissionWhenTheHostIsShortOfMemory(t *testing.T) {
	shortBed := func(t *testing.T, executor string) (context.Context, *testbed.Testbed, *testbed.Process) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		t.Cleanup(cancel)
		tb, p := resourcesBed(t, ctx, executor)
		require.NoError(t, tb.Host.SetFreeMemory(1536<<20))
		return ctx, tb, p
	}
	t.Run("bhyve", func(t *testing.T) {
		ctx, tb, p := shortBed(t, "bhyve")
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "waits", Script: []string{"echo ran"}})
		require.NoError(t, p.WaitLog(ctx, "requesting no jobs until host memory frees up"))
		time.Sleep(3 * time.Second) // three check_intervals
		rec, ok := tb.GitLab.Job(id)
		require.True(t, ok)
		assert.True(t, rec.ReceivedAt.IsZero(), "no job was requested while memory was short (status %s)", rec.Status)

		freed := time.Now()
		require.NoError(t, tb.Host.SetFreeMemory(8<<30))
		rec = tb.Wait(ctx, t, id)
		assert.Equal(t, "success", rec.Status, rec.Trace)
		t.Logf("job requested %s after memory freed", rec.ReceivedAt.Sub(freed).Round(time.Millisecond))
		assert.Contains(t, testbed.Plain(p.Log()), "host memory is available again; requesting jobs")
		tb.WaitOnlyTemplates(ctx, t)
	})
	t.Run("custom", func(t *testing.T) {
		ctx, tb, _ := shortBed(t, "custom")
		id := tb.Enqueue(t, gitlab.JobSpec{Name: "refused", Script: []string{"echo must not run"}})
		rec := tb.Wait(ctx, t, id)
		assert.Equal(t, "failed", rec.Status)
		assert.Equal(t, "runner_system_failure", rec.FailureReason)
		assert.Contains(t, rec.Trace, "not starting a VM with 1G memory: the host has 1.5G free, and starting it would leave less than memory_reserve 1G")
		assert.NotContains(t, rec.Trace, "must not run\n")
		tb.WaitOnlyTemplates(ctx, t)
	})
}
