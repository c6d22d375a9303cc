package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/supervisor"
)

// Row 1: how long from the start of prepare until the first byte of the
// first stage's output reaches the job log.
const (
	startReps     = 9 // cold and warm jobs (each warm job costs a pool boot)
	bareEachWarm  = 3 // bare SSH connections per warm guest
	poolSettle    = 300 * time.Millisecond
	poolReadyWait = 2 * time.Minute
)

// firstByte is a log writer that notes when output first arrived.
type firstByte struct {
	mu sync.Mutex
	at time.Time
}

func (f *firstByte) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.mu.Lock()
		if f.at.IsZero() {
			f.at = time.Now()
		}
		f.mu.Unlock()
	}
	return len(p), nil
}

// since is how long after t0 the first byte came.
func (f *firstByte) since(t0 time.Time) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at.IsZero() {
		return 0, errors.New("the stage wrote no output")
	}
	return f.at.Sub(t0), nil
}

// firstScript is the first stage of every measured job.
const firstScript = "echo x\n"

func startRow(b *bench) ([]row, []target, error) {
	ctx := b.ctx
	p := supervisor.New()
	p.Dialer = b.h
	ready := make(chan struct{}, 16)
	p.Logf = func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		b.debugf("provider: %s", msg)
		// The pool's boots log through the provider's log; the last line of
		// a successful boot says the VM is ready, just before the pool
		// files it as idle.
		if strings.Contains(msg, ": pool: ") && strings.Contains(msg, " is ready: ") {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := p.Shutdown(sctx); err != nil {
			b.progress("row 1: pool shutdown: %v", err)
		}
	}()
	// Limit 1: while the warm job holds the pool's VM the pool boots no
	// replacement, so nothing else runs while a start is measured.
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: b.pool, Limit: 1}

	// The first Acquire starts the pool and the first-start sweep.
	claim, err := p.Acquire(r)
	if err != nil {
		return nil, nil, err
	}
	p.Release(claim)
	if err := p.WaitSwept(ctx, r.Name); err != nil {
		return nil, nil, err
	}

	bare, err := b.bareConfig()
	if err != nil {
		return nil, nil, err
	}
	jobLog := func(format string, args ...any) { b.debugf("job: "+format, args...) }

	var cold, warm, bareT []time.Duration
	phases := map[jobvm.Phase][]time.Duration{}
	for i := range startReps {
		select {
		case <-ready:
		case <-time.After(poolReadyWait):
			return nil, nil, fmt.Errorf("the warm pool booted no VM within %s", poolReadyWait)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		time.Sleep(poolSettle) // the pool files the VM as idle; the guest settles

		// Cold: the job boots its own VM (no claim: nothing from the pool).
		d, job, err := b.timeStart(p, nil, r, jobLog)
		if err != nil {
			return nil, nil, fmt.Errorf("cold start: %w", err)
		}
		if job.Warm {
			return nil, nil, errors.New("a job without a pool claim got a warm VM")
		}
		cold = append(cold, d)
		for _, t := range job.VM.Timings {
			phases[t.Phase] = append(phases[t.Phase], t.Took)
		}
		if err := job.Finish(ctx, nil); err != nil {
			return nil, nil, fmt.Errorf("destroy the cold job's VM: %w", err)
		}

		// Warm: the pool's idle VM.
		claim, err := p.Acquire(r)
		if err != nil {
			return nil, nil, err
		}
		d, job, err = b.timeStart(p, claim, r, jobLog)
		if err != nil {
			p.Release(claim)
			return nil, nil, fmt.Errorf("warm start: %w", err)
		}
		if !job.Warm {
			_ = job.Finish(ctx, nil)
			p.Release(claim)
			return nil, nil, errors.New("the pool had no idle VM for the warm job")
		}
		warm = append(warm, d)

		// Bare: a new SSH connection and session to the same guest.
		for range bareEachWarm {
			d, err := b.bareStart(bare, job.VM.Address.IP)
			if err != nil {
				_ = job.Finish(ctx, nil)
				p.Release(claim)
				return nil, nil, fmt.Errorf("bare SSH: %w", err)
			}
			bareT = append(bareT, d)
		}
		err = job.Finish(ctx, nil)
		p.Release(claim) // the pool boots the next idle VM now
		if err != nil {
			return nil, nil, fmt.Errorf("destroy the warm job's VM: %w", err)
		}
		b.progress("row 1: %d/%d: cold %s, warm %s, bare ssh %s", i+1, startReps,
			fmtDur(d2s(cold[len(cold)-1])), fmtDur(d2s(warm[len(warm)-1])), fmtDur(d2s(bareT[len(bareT)-1])))
	}

	sc, sw, sb := summarize(seconds(cold)), summarize(seconds(warm)), summarize(seconds(bareT))
	var ph []string
	for _, name := range []jobvm.Phase{jobvm.PhaseClone, jobvm.PhaseBoot, jobvm.PhaseAddress, jobvm.PhaseSSH} {
		ph = append(ph, fmt.Sprintf("%s %s", name, fmtDur(summarize(seconds(phases[name])).Median)))
	}
	warmOverBare := sw.Median / sb.Median
	rows := []row{
		{ID: "1a", What: "job start: warm pool vs cold boot", Ours: spread(sw, fmtDur), Base: spread(sc, fmtDur),
			Ratio: "cold/warm=" + fmtRatio(sc.Median/sw.Median), N: fmt.Sprintf("%d/%d", sw.N, sc.N),
			Note: "prepare begins -> first byte of `echo x` at the log writer; cold = clone+boot+lease+ssh (medians: " + strings.Join(ph, ", ") + ")"},
		{ID: "1b", What: "job start: warm pool vs bare SSH connect+session", Ours: spread(sw, fmtDur), Base: spread(sb, fmtDur),
			Ratio: "warm/bare=" + fmtRatio(warmOverBare), N: fmt.Sprintf("%d/%d", sw.N, sb.N),
			Note: "bare = guestssh.Connect + a session running `echo x` on the same guest, until its first byte"},
	}
	return rows, []target{atMost("warm_start_vs_bare_ssh", warmOverBare, 2.0)}, nil
}

// timeStart prepares a job (warm if claim holds an idle VM) and runs its
// first stage; it returns the time from the start of Prepare to the first
// byte of output.
func (b *bench) timeStart(p *supervisor.Supervisor, claim *supervisor.Claim, r supervisor.Runner, logf jobvm.Logf) (time.Duration, *supervisor.Assignment, error) {
	ctx := b.ctx
	out := &firstByte{}
	t0 := time.Now()
	job, err := p.Prepare(ctx, claim, r, supervisor.Request{Job: jobvm.Job{ID: b.nextJob()}}, logf)
	if err != nil {
		return 0, nil, err
	}
	if err := job.Run(ctx, strings.NewReader(firstScript), out, io.Discard); err != nil {
		_ = job.Finish(ctx, err)
		return 0, nil, fmt.Errorf("first stage: %w", err)
	}
	d, err := out.since(t0)
	if err != nil {
		_ = job.Finish(ctx, err)
		return 0, nil, err
	}
	return d, job, nil
}

// bareConfig is what a plain SSH client needs for the guests: the sim's
// user, key and pinned template host key.
func (b *bench) bareConfig() (guestssh.Config, error) {
	signer, err := guestssh.LoadSigner(b.h.SSHKeyPath())
	if err != nil {
		return guestssh.Config{}, err
	}
	keys, err := guestssh.LoadKnownHosts(b.h.KnownHostsPath(), b.h.Template())
	if err != nil {
		return guestssh.Config{}, err
	}
	return guestssh.Config{
		User: b.h.SSHUser(), Signers: []ssh.Signer{signer},
		HostKeys: keys, HostKeyAlias: b.h.Template(), Dialer: b.h,
	}, nil
}

// bareStart connects to the guest and runs `echo x` in a session; it
// returns the time from the dial to the first byte of output.
func (b *bench) bareStart(cfg guestssh.Config, ip netip.Addr) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	out := &firstByte{}
	t0 := time.Now()
	c, err := guestssh.Connect(ctx, net.JoinHostPort(ip.String(), "22"), cfg)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.Run(ctx, "echo x", nil, out, io.Discard); err != nil {
		return 0, err
	}
	return out.since(t0)
}

func d2s(d time.Duration) float64 { return d.Seconds() }
