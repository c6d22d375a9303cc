package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// Row 7: scale-out as users do it. Two simulated hosts, each with its own
// config directory and native runner (upstream's `run` loop, the sandbox
// build in bin/), take jobs from one fake GitLab queue reached on each
// host's own bridge; nothing of ours coordinates them. Per repetition the
// same batch of jobs (each `sleep scaleSleep`) runs with only the first
// host's `run` polling, then with both; `run` starts before and stops after
// each batch, so its start-up does not count. Wall time is from the first
// enqueue to the last final status GitLab recorded. Each host allows
// scaleConcurrent jobs at once (config.toml concurrent and the runner's
// limit), which is what makes a host's capacity the limit and a second host
// worth adding. The row has no target: the issue sets none.
const (
	scaleJobs       = 8
	scaleSleep      = 2 * time.Second
	scaleConcurrent = 2
	scaleReps       = 3
)

func scaleRow(b *bench) ([]row, []target, error) {
	runner, executor, err := testbed.FindBinaries()
	if err != nil {
		return nil, nil, err
	}
	res, err := testbed.ScaleOut(b.ctx, testbed.ScaleOptions{
		Jobs: scaleJobs, Sleep: scaleSleep, Concurrent: scaleConcurrent, Reps: scaleReps,
		RunnerBin: runner, ExecutorBin: executor, Progress: b.progress,
	})
	if err != nil {
		return nil, nil, err
	}
	walls := func(ths []testbed.Throughput) summary {
		var ds []time.Duration
		for _, th := range ths {
			ds = append(ds, th.Wall)
		}
		return summarize(seconds(ds))
	}
	perMin := func(ths []testbed.Throughput) summary {
		var xs []float64
		for _, th := range ths {
			xs = append(xs, th.PerMinute())
		}
		return summarize(xs)
	}
	one, two := walls(res.One), walls(res.Two)
	share := map[string]int{}
	for _, th := range res.Two {
		for name, n := range th.ByRunner {
			share[name] += n
		}
	}
	var taken []string
	for _, name := range slices.Sorted(maps.Keys(share)) {
		taken = append(taken, fmt.Sprintf("%s %d", name, share[name]))
	}
	return []row{{
		ID: "7", What: fmt.Sprintf("scale-out: 2 hosts vs 1 host, %d jobs", scaleJobs),
		Ours: spread(two, fmtDur), Base: spread(one, fmtDur),
		Ratio: "1host/2hosts=" + fmtRatio(one.Median/two.Median), N: fmt.Sprintf("%d/%d", len(res.Two), len(res.One)),
		Note: fmt.Sprintf("jobs of %v, %d at once per host, one GitLab queue; %s jobs/min with 2 hosts vs %s with 1; jobs taken with 2 hosts: %s",
			scaleSleep, scaleConcurrent, sig3(perMin(res.Two).Median), sig3(perMin(res.One).Median), strings.Join(taken, ", ")),
	}}, nil, nil
}
