package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// Beside is another runner installation on tb's host with a fake GitLab of
// its own: a config directory (config.toml, bhyve.toml for o.Runners with
// o.Settings) under tb.Dir and a GitLab with the default project on the
// host's bridge. Sibling shares tb's GitLab, whose queue hands a job to
// whichever runner asks first (it has no tag matching); a GitLab per
// installation is how a caller sends a job to the runner meant to run it
// while the others keep polling. o.Sim is ignored: the host is tb's. Close
// stops only its GitLab; the directory goes with tb's.
func (tb *Testbed) Beside(ctx context.Context, name string, o Options) (*Testbed, error) {
	dir := filepath.Join(tb.Dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("installation %s: %w", name, err)
	}
	b, err := up(ctx, o, tb.RunnerBin, tb.ExecutorBin, func(sim.Options) (*sim.Host, error) { return tb.Host, nil }, dir)
	if err != nil {
		return nil, fmt.Errorf("installation %s: %w", name, err)
	}
	return b, nil
}

// Sum is the sum of the observations of histogram name over the series
// whose labels include labels (Count is their number).
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for _, s := range m.series(name, labels) {
		if s.Histogram != nil {
			sum += s.Histogram.GetSampleSum()
		}
	}
	return sum
}
