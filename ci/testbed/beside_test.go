package testbed

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// Two installations on one host, each polling its own GitLab: a job goes
// to the runner of the GitLab it was queued on, never to the other, and
// each installation has its own config.toml.
func TestBesideRoutesJobsToItsRunner(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := New(t, Options{})
	other, err := tb.Beside(ctx, "other", Options{Runners: []string{"other-runner"}})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, other.Close()) })
	require.NotEqual(t, tb.ConfigPath, other.ConfigPath)
	require.NotEqual(t, tb.URL(), other.URL())

	tb.Register(ctx, t, "first", "shell")
	other.Register(ctx, t, "second", "shell")
	for _, in := range []*Testbed{tb, other} {
		in.Start(t, "run", "--working-directory", in.Dir)
	}
	for _, c := range []struct {
		tb     *Testbed
		runner string
	}{{tb, "first"}, {other, "second"}, {tb, "first"}} {
		id := c.tb.Enqueue(t, gitlab.JobSpec{Name: "who", Script: []string{"echo ran-by-$CI_RUNNER_DESCRIPTION"}})
		rec := c.tb.Wait(ctx, t, id)
		require.Equal(t, gitlab.StatusSuccess, rec.Status, rec.Trace)
		assert.Equal(t, c.runner, RunnerNames(c.tb.GitLab)[rec.RunnerID])
		assert.True(t, HasTraceLine(rec.Trace, "ran-by-"+c.runner), rec.Trace)
	}
	assert.Len(t, tb.GitLab.Runners(), 1, "the second installation never registered with the first's GitLab")
}

func TestMetricsSum(t *testing.T) {
	page := `# TYPE gitlab_runner_bhyve_phase_duration_seconds histogram
gitlab_runner_bhyve_phase_duration_seconds_bucket{phase="poweroff",runner="a",le="+Inf"} 3
gitlab_runner_bhyve_phase_duration_seconds_sum{phase="poweroff",runner="a"} 0.39
gitlab_runner_bhyve_phase_duration_seconds_count{phase="poweroff",runner="a"} 3
gitlab_runner_bhyve_phase_duration_seconds_bucket{phase="clone",runner="a",le="+Inf"} 2
gitlab_runner_bhyve_phase_duration_seconds_sum{phase="clone",runner="a"} 9
gitlab_runner_bhyve_phase_duration_seconds_count{phase="clone",runner="a"} 2
`
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(page))
	require.NoError(t, err)
	m := Metrics(fams)
	const name = "gitlab_runner_bhyve_phase_duration_seconds"
	assert.InDelta(t, 0.39, m.Sum(name, "runner", "a", "phase", "poweroff"), 1e-9)
	assert.InDelta(t, 9.39, m.Sum(name, "runner", "a"), 1e-9)
	assert.Zero(t, m.Sum(name, "runner", "b"))
	assert.Equal(t, uint64(3), m.Count(name, "runner", "a", "phase", "poweroff"))
}
