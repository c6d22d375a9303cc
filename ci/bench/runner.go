package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Row 6: jobs through upstream's own `run` loop (the sandbox gitlab-runner)
// taking them from the fake GitLab, against upstream's shell executor on
// the same simulated host, which runs the job on the host itself: the floor
// for what a runner adds to a job.
const (
	runnerRounds    = 7 // measured jobs per installation, after one warm-up
	concurrentReps  = 5
	concurrentJobs8 = 8
	runnerJobWait   = 3 * time.Minute
	quietWait       = 2 * time.Minute
	quietSettle     = 300 * time.Millisecond
	warmMetrics     = "127.0.0.1:9252" // listen_address of the warm installation, inside the host
	coldMetrics     = "127.0.0.1:9253" // and of the cold one
	vmListReps      = 5
)

// The job every installation runs. printf makes each marker a line the
// echoed command does not contain, so the marker's own log line is found.
const (
	firstMarker = "bench-first-line"
	lastMarker  = "bench-last-line"
)

var markerJob = []string{`printf 'bench-%s\n' first-line`, `printf 'bench-%s\n' last-line`}

// installation is one gitlab-runner `run` process with one runner, on a
// fake GitLab of its own, so a job reaches exactly the runner it is for.
type installation struct {
	name    string // row label: shell, warm, cold, Custom
	runner  string // runner name in config.toml and bhyve.toml
	metrics string // listen_address, if it serves /metrics
	tb      *testbed.Testbed
	p       *testbed.Process
	debugf  func(format string, args ...any)
}

// jobTimes is what one job's log and record say.
type jobTimes struct {
	start time.Duration // JobRecord.ReceivedAt -> the first marker's log line
	end   time.Duration // the last marker's log line -> JobRecord.FinishedAt
	// end, split where upstream's log shows it: the stages left after the
	// script (to the last line before "Job succeeded", which upstream writes
	// after the executor's Cleanup, common/build.go), the executor's
	// Cleanup, then the final trace and status update reaching GitLab.
	stagesAfter, cleanup, report time.Duration
}

func runnerRow(b *bench) (rows []row, targets []target, err error) {
	ctx := b.ctx
	runnerBin, executorBin, err := testbed.FindBinaries()
	if err != nil {
		return nil, nil, err
	}
	b.progress("row 6: a second simulated host with fake GitLabs and four gitlab-runner installations")
	shellTB, err := testbed.Up(ctx, testbed.Options{Runners: []string{"bench-shell"}}, runnerBin, executorBin)
	if err != nil {
		return nil, nil, err
	}
	var all []*installation
	defer func() {
		err = errors.Join(err, stopInstallations(all))
		if terr := shellTB.Close(); terr != nil {
			err = errors.Join(err, fmt.Errorf("testbed teardown: %w", terr))
		}
	}()

	shell := &installation{name: "shell", runner: "bench-shell", tb: shellTB, debugf: b.debugf}
	all = append(all, shell)
	mk := func(name, runner, metrics string, settings ...string) (*installation, error) {
		tb, err := shellTB.Beside(ctx, name, testbed.Options{Runners: []string{runner}, Settings: settings})
		if err != nil {
			return nil, err
		}
		in := &installation{name: name, runner: runner, metrics: metrics, tb: tb, debugf: b.debugf}
		all = append(all, in)
		return in, nil
	}
	// Limit 1 on the warm runner: while its job holds the pool's VM the
	// pool boots no replacement, so nothing else runs while a job is timed.
	warm, err := mk("warm", "bench-warm", warmMetrics, "pool.idle_count = 1", "pool.max_concurrent_boots = 1")
	if err != nil {
		return nil, nil, err
	}
	cold, err := mk("cold", "bench-cold", coldMetrics)
	if err != nil {
		return nil, nil, err
	}
	custom, err := mk("Custom", "bench-custom", "")
	if err != nil {
		return nil, nil, err
	}
	for _, in := range []struct {
		in       *installation
		executor string
		limit    int
		extra    []string
	}{
		{shell, "shell", concurrentJobs8, nil},
		{warm, "bhyve", 1, nil},
		{cold, "bhyve", concurrentJobs8, nil},
		{custom, "custom", 1, custom.tb.CustomArgs(custom.runner)},
	} {
		if err := in.in.launch(ctx, b, in.executor, in.limit, in.extra); err != nil {
			return nil, nil, err
		}
	}
	quiet := func() error { return waitQuiet(ctx, shellTB, warm) }

	// Warm-up: each process's first job (first clone, first connections),
	// not measured, and proof that every installation runs the job.
	b.progress("row 6: one warm-up job per installation")
	singles := []*installation{shell, warm, cold, custom}
	for _, in := range singles {
		if err := quiet(); err != nil {
			return nil, nil, err
		}
		if _, err := in.runJob(ctx); err != nil {
			return nil, nil, err
		}
	}

	times := map[string][]jobTimes{}
	for round := range runnerRounds {
		// Rotate who goes first, so no side always follows the same one.
		order := append(append([]*installation{}, singles[round%len(singles):]...), singles[:round%len(singles)]...)
		var line []string
		for _, in := range order {
			if err := quiet(); err != nil {
				return nil, nil, err
			}
			jt, err := in.runJob(ctx)
			if err != nil {
				return nil, nil, err
			}
			times[in.name] = append(times[in.name], jt)
			line = append(line, fmt.Sprintf("%s %s/%s", in.name, fmtDur(jt.start.Seconds()), fmtDur(jt.end.Seconds())))
		}
		b.progress("row 6: %d/%d start/end: %s", round+1, runnerRounds, strings.Join(line, ", "))
	}

	// Before the batches, whose VMs power off eight at a time.
	diag, err := powerOffDiagnosis(ctx, shellTB, warm, cold)
	if err != nil {
		return nil, nil, err
	}

	// Eight at once: the shell runner and the cold native runner, both with
	// concurrent = 8 and limit 8.
	walls, pickups := map[string][]time.Duration{}, map[string][]time.Duration{}
	for rep := range concurrentReps {
		order := []*installation{shell, cold}
		if rep%2 == 1 {
			order = []*installation{cold, shell}
		}
		for _, in := range order {
			if err := quiet(); err != nil {
				return nil, nil, err
			}
			wall, pickup, err := in.runBatch(ctx, concurrentJobs8)
			if err != nil {
				return nil, nil, err
			}
			walls[in.name] = append(walls[in.name], wall)
			pickups[in.name] = append(pickups[in.name], pickup)
		}
		b.progress("row 6: %d/%d: %d jobs at once: shell %s, native %s", rep+1, concurrentReps, concurrentJobs8,
			fmtDur(walls["shell"][rep].Seconds()), fmtDur(walls["cold"][rep].Seconds()))
	}
	rows, targets = runnerRows(times, walls, pickups)
	rows[3].Note += "\n" + diag
	return rows, targets, nil
}

// runnerRows turns the measurements into rows 6a-6g and their targets.
func runnerRows(times map[string][]jobTimes, walls, pickups map[string][]time.Duration) ([]row, []target) {
	pick := func(f func(jobTimes) time.Duration, names ...string) summary {
		var ds []time.Duration
		for _, name := range names {
			for _, jt := range times[name] {
				ds = append(ds, f(jt))
			}
		}
		return summarize(seconds(ds))
	}
	start := func(jt jobTimes) time.Duration { return jt.start }
	end := func(jt jobTimes) time.Duration { return jt.end }
	shellStart, shellEnd := pick(start, "shell"), pick(end, "shell")
	n := func(ours, base summary) string { return fmt.Sprintf("%d/%d", ours.N, base.N) }
	startRow := func(id, what, side string) (row, float64) {
		s := pick(start, side)
		r := s.Median / shellStart.Median
		return row{ID: id, What: what, Ours: spread(s, fmtDur), Base: spread(shellStart, fmtDur),
			Ratio: side + "/shell=" + fmtRatio(r), N: n(s, shellStart)}, r
	}
	warmRow, warmRatio := startRow("6a", "job received -> first script line: native warm vs shell executor", "warm")
	warmRow.Note = "through `gitlab-runner run` and the fake GitLab: JobRecord.ReceivedAt (its 201 to jobs/request) to the runner's timestamp on the script's first output line; pool idle_count 1, full before each job"
	coldRow, _ := startRow("6b", "job received -> first script line: native cold vs shell executor", "cold")
	customRow, _ := startRow("6c", "job received -> first script line: Custom (bhyve-executor) vs shell", "Custom")

	nativeEnd, customEnd := pick(end, "warm", "cold"), pick(end, "Custom")
	// split is where a side's end goes, as medians.
	split := func(names ...string) string {
		med := func(f func(jobTimes) time.Duration) string { return fmtDur(pick(f, names...).Median) }
		return fmt.Sprintf("stages after the script %s, executor Cleanup %s, final update %s",
			med(func(jt jobTimes) time.Duration { return jt.stagesAfter }),
			med(func(jt jobTimes) time.Duration { return jt.cleanup }),
			med(func(jt jobTimes) time.Duration { return jt.report }))
	}
	endRatio := nativeEnd.Median / shellEnd.Median
	rows := []row{warmRow, coldRow, customRow,
		{ID: "6d", What: "last script line -> final status at GitLab: native vs shell executor",
			Ours: spread(nativeEnd, fmtDur), Base: spread(shellEnd, fmtDur), Ratio: "native/shell=" + fmtRatio(endRatio), N: n(nativeEnd, shellEnd),
			Note: fmt.Sprintf("the runner's timestamp on the script's last output line to JobRecord.FinishedAt; native = the warm and the cold jobs (warm %s, cold %s)\n"+
				"native: %s\nshell:  %s",
				fmtDur(pick(end, "warm").Median), fmtDur(pick(end, "cold").Median), split("warm", "cold"), split("shell"))},
		{ID: "6e", What: "last script line -> final status at GitLab: Custom vs shell executor",
			Ours: spread(customEnd, fmtDur), Base: spread(shellEnd, fmtDur), Ratio: "Custom/shell=" + fmtRatio(customEnd.Median/shellEnd.Median), N: n(customEnd, shellEnd),
			Note: "Custom: " + split("Custom")},
	}

	wallN, wallS := summarize(seconds(walls["cold"])), summarize(seconds(walls["shell"]))
	pickupN, pickupS := summarize(seconds(pickups["cold"])), summarize(seconds(pickups["shell"]))
	perMin := func(s summary) summary {
		if s.N == 0 {
			return s
		}
		return summary{N: s.N, Median: concurrentJobs8 * 60 / s.Median, Lo: concurrentJobs8 * 60 / s.Hi, Hi: concurrentJobs8 * 60 / s.Lo}
	}
	jpm := func(v float64) string {
		if math.IsNaN(v) {
			return "n/a"
		}
		return sig3(v) + "/min"
	}
	rows = append(rows,
		row{ID: "6f", What: fmt.Sprintf("%d jobs at once through `run` (concurrent=8, limit 8), wall: native cold vs shell", concurrentJobs8),
			Ours: spread(wallN, fmtDur), Base: spread(wallS, fmtDur), Ratio: "native/shell=" + fmtRatio(wallN.Median/wallS.Median), N: n(wallN, wallS),
			Note: fmt.Sprintf("from the first job's receipt to the last final status GitLab received (receiving all eight took native %s, shell %s; request_concurrency 1, upstream's default)",
				spread(pickupN, fmtDur), spread(pickupS, fmtDur))},
		row{ID: "6g", What: fmt.Sprintf("%d jobs at once (info): jobs per minute, native cold vs shell", concurrentJobs8),
			Ours: spread(perMin(wallN), jpm), Base: spread(perMin(wallS), jpm), Ratio: "native/shell=" + fmtRatio(perMin(wallN).Median/perMin(wallS).Median), N: n(wallN, wallS)},
	)
	return rows, []target{
		atMost("job_start_warm_vs_shell", warmRatio, 1.5),
		atMost("job_end_vs_shell", endRatio, 10),
	}
}

// launch registers the installation's runner and starts `run` for it.
func (in *installation) launch(ctx context.Context, b *bench, executor string, limit int, extra []string) error {
	args := append([]string{"--limit", strconv.Itoa(limit)}, extra...)
	if _, err := in.tb.RegisterRunner(ctx, in.runner, executor, args...); err != nil {
		return err
	}
	globals := [][2]string{{"concurrent", strconv.Itoa(concurrentJobs8)}}
	if in.metrics != "" {
		globals = append(globals, [2]string{"listen_address", strconv.Quote(in.metrics)})
	}
	for _, g := range globals {
		if err := in.tb.SetGlobalKey(g[0], g[1]); err != nil {
			return err
		}
	}
	args = []string{"run", "--working-directory", in.tb.Dir}
	if b.verbose {
		args = append([]string{"--debug"}, args...)
	}
	p, err := in.tb.Launch(args...)
	if err != nil {
		return err
	}
	in.p = p
	return nil
}

// runJob runs the marker job and reads its times.
func (in *installation) runJob(ctx context.Context) (jobTimes, error) {
	id, err := in.tb.GitLab.Enqueue(gitlab.JobSpec{Name: "bench", Project: testbed.Project, Script: markerJob})
	if err != nil {
		return jobTimes{}, err
	}
	rec, err := in.wait(ctx, id)
	if err != nil {
		return jobTimes{}, err
	}
	in.debugf("%s job %d: received %s, finished %s, trace:\n%s", in.name, id,
		rec.ReceivedAt.UTC().Format(time.RFC3339Nano), rec.FinishedAt.UTC().Format(time.RFC3339Nano), testbed.Plain(rec.Trace))
	return markerTimes(rec)
}

// runBatch enqueues k marker jobs at once and returns the wall time from
// the first job's receipt to the last final status, and how long the
// runner took to receive all k. The wait before the first receipt is
// GitLab's long poll meeting the runner's check_interval, not the runner's
// work, so it is left out.
func (in *installation) runBatch(ctx context.Context, k int) (wall, pickup time.Duration, err error) {
	ids := make([]int64, k)
	for i := range ids {
		id, err := in.tb.GitLab.Enqueue(gitlab.JobSpec{Name: fmt.Sprintf("bench %d", i), Project: testbed.Project, Script: markerJob})
		if err != nil {
			return 0, 0, err
		}
		ids[i] = id
	}
	var first, lastReceived, last time.Time
	for _, id := range ids {
		rec, err := in.wait(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		if _, err := markerTimes(rec); err != nil {
			return 0, 0, err
		}
		if first.IsZero() || rec.ReceivedAt.Before(first) {
			first = rec.ReceivedAt
		}
		if rec.ReceivedAt.After(lastReceived) {
			lastReceived = rec.ReceivedAt
		}
		if rec.FinishedAt.After(last) {
			last = rec.FinishedAt
		}
	}
	return last.Sub(first), lastReceived.Sub(first), nil
}

// wait waits for a job to succeed; anything else is the row's failure, with
// the trace and the runner's log.
func (in *installation) wait(ctx context.Context, id int64) (gitlab.JobRecord, error) {
	wctx, cancel := context.WithTimeout(ctx, runnerJobWait)
	defer cancel()
	rec, err := in.tb.GitLab.Wait(wctx, id)
	if err == nil && rec.Status == gitlab.StatusSuccess {
		return rec, nil
	}
	if err == nil {
		err = fmt.Errorf("ended %s (%s)", rec.Status, rec.FailureReason)
	} else {
		rec, _ = in.tb.GitLab.Job(id)
	}
	return rec, fmt.Errorf("%s job %d: %w\ntrace:\n%s\nrunner log (tail):\n%s", in.name, id, err,
		testbed.Plain(rec.Trace), tail(testbed.Plain(in.p.Log()), 40))
}

// markerTimes reads a finished job's start and end from its log lines'
// timestamps and GitLab's record.
func markerTimes(rec gitlab.JobRecord) (jobTimes, error) {
	log, err := testbed.ParseTimedTrace(rec.Trace)
	if err != nil {
		return jobTimes{}, fmt.Errorf("job %d: %w", rec.ID, err)
	}
	first, last, succeeded := log.Index(firstMarker), log.Index(lastMarker), log.Index("Job succeeded")
	if first < 0 || last < first || succeeded <= last {
		return jobTimes{}, fmt.Errorf("job %d: the log lacks the script's marker lines %q and %q, or the %q after them:\n%s",
			rec.ID, firstMarker, lastMarker, "Job succeeded", testbed.Plain(rec.Trace))
	}
	if rec.ReceivedAt.IsZero() || rec.FinishedAt.IsZero() {
		return jobTimes{}, fmt.Errorf("job %d: GitLab recorded no receipt or no end", rec.ID)
	}
	lastAt, cleanupAt, succeededAt := log[last].At, log[succeeded-1].At, log[succeeded].At
	return jobTimes{
		start:       log[first].At.Sub(rec.ReceivedAt),
		end:         rec.FinishedAt.Sub(lastAt),
		stagesAfter: cleanupAt.Sub(lastAt),
		cleanup:     succeededAt.Sub(cleanupAt),
		report:      rec.FinishedAt.Sub(succeededAt),
	}, nil
}

// powerOffDiagnosis says where the native executor's Cleanup goes: the
// poweroff phase as the runners' own metrics measured it (`vm poweroff -f`,
// then `vm list` every poll interval until the guest shows stopped), and
// what one `vm list` costs on this host.
const (
	phaseMetric = "gitlab_runner_bhyve_phase_duration_seconds"
	vmsMetric   = "gitlab_runner_bhyve_vms"
)

func powerOffDiagnosis(ctx context.Context, tb *testbed.Testbed, ins ...*installation) (string, error) {
	var sum, count float64
	for _, in := range ins {
		m, err := tb.Metrics(ctx, in.metrics)
		if err != nil {
			return "", fmt.Errorf("%s runner's metrics: %w", in.name, err)
		}
		labels := []string{"runner", in.runner, "phase", "poweroff"}
		c := m.Count(phaseMetric, labels...)
		if c == 0 {
			return "", fmt.Errorf("%s runner's metrics have no poweroff phase:\n%s", in.name, m)
		}
		sum, count = sum+m.Sum(phaseMetric, labels...), count+float64(c)
	}
	var lists []time.Duration
	for range vmListReps {
		t0 := time.Now()
		if _, err := tb.Host.VM(ctx, "list"); err != nil {
			return "", fmt.Errorf("vm list: %w", err)
		}
		lists = append(lists, time.Since(t0))
	}
	return fmt.Sprintf("native Cleanup is mostly the poweroff phase: mean %s over the %.0f VMs of the single jobs (gitlab_runner_bhyve_phase_duration_seconds); "+
		"one `vm list` here takes %s, polled every %s after `vm poweroff -f` until the guest shows stopped",
		fmtDur(sum/count), count, spread(summarize(seconds(lists)), fmtDur), fmtDur(vmbhyve.DefaultPollInterval.Seconds())), nil
}

// waitQuiet waits until nothing runs on the host but the warm pool's one
// idle VM: no boots, no background destroys, no job VM in `vm list`.
func waitQuiet(ctx context.Context, tb *testbed.Testbed, warm *installation) error {
	wctx, cancel := context.WithTimeout(ctx, quietWait)
	defer cancel()
	var last string
	for {
		m, err := tb.Metrics(wctx, warmMetrics)
		if err == nil {
			st := map[string]float64{}
			for _, state := range []string{"idle", "booting", "in_use", "destroying"} {
				st[state] = m.Value(vmsMetric, "runner", warm.runner, "state", state)
			}
			var vms []string
			vms, err = tb.JobVMs(wctx)
			if err == nil {
				if st["idle"] == 1 && st["booting"] == 0 && st["in_use"] == 0 && st["destroying"] == 0 && len(vms) == 1 {
					break
				}
				last = fmt.Sprintf("warm pool %v, job VMs %v", st, vms)
			}
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("the host did not become quiet within %s (%s): %w", quietWait, last, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	select {
	case <-time.After(quietSettle):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopInstallations stops every runner gracefully (SIGQUIT: upstream
// finishes its jobs, then the providers drain their pools) and then checks
// that no job VM is left.
func stopInstallations(all []*installation) error {
	var errs []error
	for _, in := range all {
		if in.p == nil {
			continue
		}
		if err := in.p.Signal(syscall.SIGQUIT); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := in.p.Wait(ctx); err != nil && !in.p.Exited() {
				errs = append(errs, fmt.Errorf("%s runner: %w", in.name, err))
			}
			cancel()
		}
		in.p.Stop()
		if in.tb.GitLab != nil && in.name != "shell" {
			errs = append(errs, in.tb.Close())
		}
	}
	if len(all) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if vms, err := all[0].tb.JobVMs(ctx); err != nil {
			errs = append(errs, err)
		} else if len(vms) > 0 {
			errs = append(errs, fmt.Errorf("job VMs left after every runner stopped: %v", vms))
		}
	}
	return errors.Join(errs...)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
