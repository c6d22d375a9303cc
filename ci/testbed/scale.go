package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// Scale-out as operators do it: more runners or more hosts taking jobs from
// GitLab's own queue, with nothing of ours coordinating them.

// Join brings up another simulated host whose runners take jobs from
// existing's fake GitLab: one queue, one project, reached by this host and
// its guests on a listener of its own on this host's bridge (each host's
// 10.77.0.1 is its own network). o.GitLab and o.Files are not used; the
// GitLab and its project are existing's, and existing's teardown closes it.
func Join(t testing.TB, existing *Testbed, o Options) *Testbed {
	t.Helper()
	o.join = existing
	return New(t, o)
}

// UpJoined is Join outside a test; Close tears the host down and leaves
// existing's GitLab serving.
func UpJoined(ctx context.Context, existing *Testbed, o Options) (*Testbed, error) {
	o.join = existing
	return Up(ctx, o, existing.RunnerBin, existing.ExecutorBin)
}

// joinGitLab serves existing's GitLab on ln, tb's host's bridge.
func joinGitLab(tb, existing *Testbed, ln net.Listener) (*Testbed, error) {
	url, err := existing.GitLab.AddListener(ln)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("serve %s's GitLab on %s: %w", existing, ln.Addr(), err)
	}
	tb.GitLab, tb.Repo, tb.url, tb.borrowed = existing.GitLab, existing.Repo, url, true
	return tb, nil
}

// Sibling is a second config directory (config.toml and bhyve.toml with
// sections for runners) on tb's host, for a second `run` process that
// shares the host's vm-bhyve and Kea and tb's GitLab, as a second service
// instance on one FreeBSD host would.
func (tb *Testbed) Sibling(t testing.TB, runners ...string) *Testbed {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := *tb
	s.Dir, s.ConfigPath, s.SettingsPath = dir, filepath.Join(dir, "config.toml"), filepath.Join(dir, "bhyve.toml")
	s.closeHost, s.borrowed = nil, true
	if err := fixture.WriteSharedSettings(tb.Host, s.SettingsPath, runners); err != nil {
		t.Fatalf("write %s: %v", s.SettingsPath, err)
	}
	return &s
}

// URL is GitLab's address as runners on this host are configured with it.
func (tb *Testbed) URL() string {
	if tb.url != "" {
		return tb.url
	}
	return tb.GitLab.URL()
}

// closeGitLab closes the fake GitLab unless another testbed owns it.
func (tb *Testbed) closeGitLab() error {
	if tb.borrowed {
		return nil
	}
	return tb.GitLab.Close()
}

// RunnerNames maps GitLab's runner IDs to the names they registered with,
// which is how JobRecord.RunnerID tells whose job it was.
func RunnerNames(srv *gitlab.Server) map[int64]string {
	names := map[int64]string{}
	for _, r := range srv.Runners() {
		names[r.ID] = r.Description
	}
	return names
}

// Throughput is one batch of jobs through whatever runners were polling.
type Throughput struct {
	Jobs     int
	Sleep    time.Duration  // each job's script
	Wall     time.Duration  // first enqueue to the last final status
	ByRunner map[string]int // jobs per runner name
	Records  []gitlab.JobRecord
}

// PerMinute is the batch's rate in jobs per minute of wall time.
func (th Throughput) PerMinute() float64 {
	if th.Wall <= 0 {
		return 0
	}
	return float64(th.Jobs) / th.Wall.Minutes()
}

// RunJobs queues n jobs on srv's default project that each sleep d, waits
// for all of them and fails unless every one succeeded. What took them is
// whatever runners poll srv; the time is the wall time from the first
// enqueue to the last final status GitLab recorded.
func RunJobs(ctx context.Context, srv *gitlab.Server, n int, d time.Duration) (Throughput, error) {
	th := Throughput{Jobs: n, Sleep: d, ByRunner: map[string]int{}}
	secs := fmt.Sprintf("%.3f", d.Seconds())
	start := time.Now()
	ids := make([]int64, n)
	for i := range ids {
		id, err := srv.Enqueue(gitlab.JobSpec{Name: fmt.Sprintf("scale-%d", i), Project: Project,
			Script: []string{`echo "scale job via $CI_SERVER_URL"`, "sleep " + secs}})
		if err != nil {
			return th, fmt.Errorf("enqueue job %d of %d: %w", i+1, n, err)
		}
		ids[i] = id
	}
	var errs []error
	var last time.Time
	for _, id := range ids {
		rec, err := srv.Wait(ctx, id)
		if err != nil {
			cur, _ := srv.Job(id)
			errs = append(errs, fmt.Errorf("job %d: %w (status %q)", id, err, cur.Status))
			continue
		}
		if rec.Status != gitlab.StatusSuccess {
			errs = append(errs, fmt.Errorf("job %d ended %s (%s), trace:\n%s", id, rec.Status, rec.FailureReason, rec.Trace))
		}
		if rec.FinishedAt.After(last) {
			last = rec.FinishedAt
		}
		th.Records = append(th.Records, rec)
	}
	th.Wall = last.Sub(start)
	names := RunnerNames(srv)
	for _, rec := range th.Records {
		th.ByRunner[names[rec.RunnerID]]++
	}
	return th, errors.Join(errs...)
}

// ScaleOptions shape a scale-out measurement.
type ScaleOptions struct {
	Jobs        int           // per batch
	Sleep       time.Duration // each job's script
	Concurrent  int           // per host: config.toml concurrent and the runner's limit
	Reps        int           // batches per side, alternating
	RunnerBin   string
	ExecutorBin string
	// Progress, when set, gets a line per batch.
	Progress func(format string, args ...any)
}

// ScaleResult is the same batch run through one host and through two,
// alternating, in one run.
type ScaleResult struct {
	One, Two []Throughput
}

// ScaleOut measures the throughput of one host against two hosts pulling
// from one fake GitLab: two simulated hosts, each with its own config
// directory and native runner, are brought up once; per repetition the
// batch runs with only the first host's `run` process polling, then with
// both. Each `run` starts before and stops after its batch, so start-up
// never counts, and every batch starts on hosts with no job VM.
func ScaleOut(ctx context.Context, o ScaleOptions) (res ScaleResult, err error) {
	if o.Jobs <= 0 || o.Sleep <= 0 || o.Concurrent <= 0 || o.Reps <= 0 {
		return res, fmt.Errorf("scale-out: Jobs, Sleep, Concurrent and Reps must be positive: %+v", o)
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	names := []string{"scale-a", "scale-b"}
	a, err := Up(ctx, Options{Runners: names[:1]}, o.RunnerBin, o.ExecutorBin)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, closeChecked(a)) }()
	b, err := UpJoined(ctx, a, Options{Runners: names[1:]})
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, closeChecked(b)) }()
	hosts := []*Testbed{a, b}
	for i, tb := range hosts {
		if _, err := tb.RegisterRunner(ctx, names[i], "bhyve", "--limit", fmt.Sprint(o.Concurrent)); err != nil {
			return res, err
		}
		if err := tb.SetGlobalKey("concurrent", fmt.Sprint(o.Concurrent)); err != nil {
			return res, err
		}
		// Jobs are queued all at once and long polls hand them out as
		// they come; a short interval only matters for the first request.
		if err := tb.SetGlobalKey("check_interval", "1"); err != nil {
			return res, err
		}
	}
	for rep := range o.Reps {
		for _, k := range []int{1, 2} {
			th, err := batch(ctx, hosts[:k], o)
			if err != nil {
				return res, fmt.Errorf("repetition %d, %d host(s): %w", rep+1, k, err)
			}
			progress("scale-out: %d host(s): %d jobs of %v in %v (%.1f jobs/min), by runner %v",
				k, th.Jobs, th.Sleep, th.Wall.Round(time.Millisecond), th.PerMinute(), th.ByRunner)
			if k == 1 {
				res.One = append(res.One, th)
			} else {
				res.Two = append(res.Two, th)
			}
		}
	}
	return res, nil
}

// closeChecked closes a testbed from Up and fails if its host left
// anything behind (sim.New's cleanup checks the same in tests).
func closeChecked(tb *Testbed) error {
	err := tb.Close()
	if r := tb.Host.Resources(); !r.Empty() {
		err = errors.Join(err, fmt.Errorf("%s left resources behind:\n%s", tb, r))
	}
	return err
}

// batch runs one batch with a `run` process on each of hosts.
func batch(ctx context.Context, hosts []*Testbed, o ScaleOptions) (Throughput, error) {
	var procs []*Process
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	for _, tb := range hosts {
		since := time.Now()
		p, err := tb.Launch("run")
		if err != nil {
			return Throughput{}, err
		}
		procs = append(procs, p)
		if err := tb.waitPolling(ctx, p, since); err != nil {
			return Throughput{}, err
		}
	}
	th, err := RunJobs(ctx, hosts[0].GitLab, o.Jobs, o.Sleep)
	if err != nil {
		return th, err
	}
	// SIGQUIT is upstream's graceful stop: nothing runs, so it exits at once.
	for i, p := range procs {
		if err := p.Signal(syscall.SIGQUIT); err != nil {
			return th, err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := p.Wait(wctx)
		cancel()
		if err != nil {
			return th, fmt.Errorf("gitlab-runner on %s after SIGQUIT: %w\n%s", hosts[i], err, Plain(p.Log()))
		}
	}
	for _, tb := range hosts {
		if err := tb.waitNoJobVMs(ctx, 30*time.Second); err != nil {
			return th, err
		}
	}
	return th, nil
}

// waitPolling waits until GitLab has heard from a runner manager of tb's
// config directory since since: the `run` process p is taking jobs.
func (tb *Testbed) waitPolling(ctx context.Context, p *Process, since time.Time) error {
	cfg, err := os.ReadFile(tb.ConfigPath)
	if err != nil {
		return err
	}
	for {
		for _, r := range tb.GitLab.Runners() {
			if !strings.Contains(string(cfg), fmt.Sprintf("name = %q", r.Description)) {
				continue
			}
			for _, m := range r.Managers {
				if m.ContactedAt.After(since) {
					return nil
				}
			}
		}
		if p.Exited() {
			return fmt.Errorf("gitlab-runner on %s exited before polling:\n%s", tb, Plain(p.Log()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gitlab-runner on %s never polled: %w\n%s", tb, ctx.Err(), Plain(p.Log()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// JobVMs are the VMs in `vm list` that are not templates.
func (tb *Testbed) JobVMs(ctx context.Context) ([]string, error) {
	names, err := tb.listVMs(ctx)
	if err != nil {
		return nil, err
	}
	var vms []string
	for _, n := range names {
		if !contains(tb.Host.Templates(), n) {
			vms = append(vms, n)
		}
	}
	sort.Strings(vms)
	return vms, nil
}

// waitNoJobVMs waits up to d until `vm list` shows only templates.
func (tb *Testbed) waitNoJobVMs(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		left, err := tb.JobVMs(ctx)
		if err == nil && len(left) == 0 {
			return nil
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job VMs left on %s: %v", tb, left)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job VMs left on %s: %v: %w", tb, left, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
