package supervisor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/supervisor"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

func refusals(t *testing.T, p *supervisor.Supervisor) string {
	t.Helper()
	out, err := testutil.CollectAndFormat(p.Collector(), expfmt.TypeTextPlain, "gitlab_runner_bhyve_admissions_refused_total")
	require.NoError(t, err)
	return string(out)
}

// Acquire comes before the job, so it can only ask whether a VM of the
// template's size (memory=1024M in the simulated template) fits: while it
// does not, upstream gets "no free executor" and requests no job.
func TestAcquireRefusesWhileATemplateSizedVMDoesNotFit(t *testing.T) {
	t.Parallel()
	h := fixture.New(t, sim.Options{}, `memory_reserve = "1G"`)
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}

	require.NoError(t, h.SetFreeMemory(1536<<20))
	_, err := p.Acquire(r)
	require.ErrorIs(t, err, supervisor.ErrNoMemory)
	var refused *jobvm.AdmissionError
	require.ErrorAs(t, err, &refused)
	assert.Equal(t, hostmem.GiB, refused.Need)
	assert.Contains(t, refusals(t, p), `gitlab_runner_bhyve_admissions_refused_total{runner="sim-runner",stage="acquire"} 1`)

	require.NoError(t, h.SetFreeMemory(2<<30))
	slot, err := p.Acquire(r)
	require.NoError(t, err, "2G free holds a 1G VM above the 1G reserve")
	p.Release(slot)
}

// A job asking for more than the warm VM has boots its own VM with that
// size; the warm VM stays in the pool for a job of the template's size.
func TestBiggerJobBootsItsOwnVMAndTheWarmOneStays(t *testing.T) {
	t.Parallel()
	h := fixture.New(t, sim.Options{}, `max_memory = "4G"`, "[runners.\"sim-runner\".pool]", "idle_count = 1")
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	warmup, err := p.Acquire(r)
	require.NoError(t, err)
	p.Release(warmup)
	require.Eventually(t, func() bool { return gauge(t, p, "idle") == 1 }, 60*time.Second, 50*time.Millisecond)
	var warm string
	for _, name := range vmNames(t, h) {
		if strings.HasPrefix(name, "ci-sim-runner-p") {
			warm = name
		}
	}
	require.NotEmpty(t, warm)

	slot, err := p.Acquire(r)
	require.NoError(t, err)
	var log strings.Builder
	job, err := p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 7}, Resources: jobvm.Resources{Memory: 2 * hostmem.GiB}},
		func(f string, a ...any) { log.WriteString(strings.TrimSpace(fmtLine(f, a...)) + "\n") })
	require.NoError(t, err)
	t.Log(log.String())
	assert.False(t, job.Warm)
	assert.Contains(t, log.String(), "VM size: 2 CPUs, 2G memory (BHYVE_MEMORY; the rest is template tmpl's)")
	d := &vmbhyve.Driver{VMDir: h.VMDir()}
	conf, err := d.ReadConf(job.VM.Name)
	require.NoError(t, err)
	assert.Equal(t, "2G", conf["memory"])
	assert.Contains(t, vmNames(t, h), warm, "the warm VM was not used and still waits")
	require.NoError(t, job.Finish(context.Background(), nil))
	p.Release(slot)
}

// Acquire found room for a template-sized VM, but the job asks for more
// than the host can give: its prepare waits for memory up to boot_timeout,
// then fails as a system failure (upstream retries it).
func TestPrepareOfABiggerJobWaitsThenFails(t *testing.T) {
	t.Parallel()
	h := fixture.New(t, sim.Options{}, `max_memory = "8G"`, `memory_reserve = "1G"`, `boot_timeout = "2s"`)
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	require.NoError(t, h.SetFreeMemory(3<<30))

	slot, err := p.Acquire(r)
	require.NoError(t, err, "a 1G VM fits in 3G above the 1G reserve")
	start := time.Now()
	_, err = p.Prepare(context.Background(), slot, r, supervisor.Request{Job: jobvm.Job{ID: 8}, Resources: jobvm.Resources{Memory: 4 * hostmem.GiB}}, t.Logf)
	took := time.Since(start)
	t.Logf("prepare refused after %s", took.Round(time.Millisecond))
	var refused *jobvm.AdmissionError
	require.True(t, errors.As(err, &refused), "want an *AdmissionError, got %v", err)
	assert.GreaterOrEqual(t, took, 2*time.Second, "waited boot_timeout for memory")
	assert.Contains(t, err.Error(), "waited 2s for memory to free up")
	assert.Contains(t, refusals(t, p), `gitlab_runner_bhyve_admissions_refused_total{runner="sim-runner",stage="prepare"} 1`)
	assert.Zero(t, jobVMs(t, h), "nothing was cloned")
	p.Release(slot)
}

func fmtLine(format string, args ...any) string { return fmt.Sprintf(format, args...) }
