package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// Row 5: many cold jobs at once on a small host.
const (
	concurrentJobs  = 8
	concurrencyReps = 5
	stagesPerSmall  = 3
)

// batch is one measurement: k cold jobs started together.
type batch struct {
	wall    time.Duration
	ownCPU  time.Duration // this process and its reaped children
	machine time.Duration // every CPU of the machine
}

func concurrencyRow(b *bench) ([]row, []target, error) {
	// Nothing but the measured jobs on the host.
	if err := b.closeSharedVM(); err != nil {
		return nil, nil, err
	}
	s, err := b.loadSettings()
	if err != nil {
		return nil, nil, err
	}
	m := b.host.Manager(s, "", "")

	// job is a whole small cold job: Create, three stages, Close.
	job := func(ctx context.Context) (err error) {
		vm, err := m.Create(ctx, jobvm.Job{ID: b.nextJob()}, b.debugf)
		if err != nil {
			return err
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			err = errors.Join(err, vm.Close(dctx))
		}()
		for i := range stagesPerSmall {
			var stderr bytes.Buffer
			if err := vm.Run(ctx, strings.NewReader(fmt.Sprintf("echo stage %d\n", i)), io.Discard, &stderr); err != nil {
				return fmt.Errorf("stage %d: %w: %s", i, err, stderr.String())
			}
		}
		return nil
	}
	measure := func(k int) (batch, error) {
		cpu0, err := selfAndChildrenCPU()
		if err != nil {
			return batch{}, err
		}
		st0, err := readProcStat()
		if err != nil {
			return batch{}, err
		}
		t0 := time.Now()
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i := range k {
			wg.Go(func() { errs[i] = job(b.ctx) })
		}
		wg.Wait()
		wall := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return batch{}, err
		}
		cpu1, err := selfAndChildrenCPU()
		if err != nil {
			return batch{}, err
		}
		st1, err := readProcStat()
		if err != nil {
			return batch{}, err
		}
		return batch{wall: wall, ownCPU: cpu1.sub(cpu0).Total() / time.Duration(k), machine: machineCPU(st0, st1) / time.Duration(k)}, nil
	}

	var alone, together []batch
	for rep := range concurrencyReps {
		a, err := measure(1)
		if err != nil {
			return nil, nil, fmt.Errorf("1 job alone: %w", err)
		}
		c, err := measure(concurrentJobs)
		if err != nil {
			return nil, nil, fmt.Errorf("%d concurrent jobs: %w", concurrentJobs, err)
		}
		alone, together = append(alone, a), append(together, c)
		b.progress("row 5: %d/%d: 1 job %s, %d jobs %s", rep+1, concurrencyReps, fmtDur(d2s(a.wall)), concurrentJobs, fmtDur(d2s(c.wall)))
	}

	pick := func(bs []batch, f func(batch) time.Duration) summary {
		var ds []time.Duration
		for _, x := range bs {
			ds = append(ds, f(x))
		}
		return summarize(seconds(ds))
	}
	wall := func(x batch) time.Duration { return x.wall }
	own := func(x batch) time.Duration { return x.ownCPU }
	mach := func(x batch) time.Duration { return x.machine }
	wa, wt := pick(alone, wall), pick(together, wall)
	oa, ot := pick(alone, own), pick(together, own)
	ma, mt := pick(alone, mach), pick(together, mach)
	n := fmt.Sprint(concurrencyReps)
	perJob := func(x float64) string { return fmtDur(x) + "/job" }
	rows := []row{
		{ID: "5a", What: fmt.Sprintf("wall: %d concurrent cold jobs vs 1 job alone (Create, %d stages, Close)", concurrentJobs, stagesPerSmall),
			Ours: spread(wt, fmtDur), Base: spread(wa, fmtDur), Ratio: fmt.Sprintf("%d/1=%s", concurrentJobs, fmtRatio(wt.Median/wa.Median)), N: n,
			Note: fmt.Sprintf("on %d cores; %s of wall per job when %d run together, vs %s alone",
				cores(), fmtDur(wt.Median/concurrentJobs), concurrentJobs, fmtDur(wa.Median))},
		{ID: "5b", What: "CPU per job, bench process + children (getrusage SELF+CHILDREN)",
			Ours: spread(ot, perJob), Base: spread(oa, perJob), Ratio: fmt.Sprintf("%d/1=%s", concurrentJobs, fmtRatio(ot.Median/oa.Median)), N: n,
			Note: "our Go code plus the vm/sysrc commands it runs; not the guests (the simulator's processes are not our children)"},
		{ID: "5c", What: "CPU per job, whole machine (/proc/stat busy time)",
			Ours: spread(mt, perJob), Base: spread(ma, perJob), Ratio: fmt.Sprintf("%d/1=%s", concurrentJobs, fmtRatio(mt.Median/ma.Median)), N: n,
			Note: "includes the simulated guests (udhcpc, sshd, bash), Kea and anything else running on the machine"},
	}
	return rows, nil, nil
}

func cores() int { return runtime.NumCPU() }
