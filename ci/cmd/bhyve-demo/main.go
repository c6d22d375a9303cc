// Command bhyve-demo shows the product the way an operator meets it: a
// gitlab-runner with the bhyve executor is registered against a (fake)
// GitLab, runs the original article's sample job in a fresh VM on a
// simulated FreeBSD host through upstream's own `run` loop, and the job log
// is printed as GitLab shows it, with where the time went. Then the same
// job runs through a stock runner's Custom executor and bhyve-executor.
// `make demo` builds everything and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// The article's sample job, as its .gitlab-ci.yml has it.
var articleJob = []string{"ifconfig", "netstat -rn", "sockstat -4l", "freebsd-version", "uname -a"}

func main() {
	runner := flag.String("runner", "bin/gitlab-runner-sandbox", "the gitlab-runner build with the bhyve executor")
	executor := flag.String("executor", "bin/bhyve-executor", "the bhyve-executor binary for the Custom executor")
	flag.Parse()
	if err := run(*runner, *executor); err != nil {
		fmt.Fprintln(os.Stderr, "bhyve-demo:", err)
		os.Exit(1)
	}
}

func run(runnerPath, executorPath string) error {
	runnerBin, err := executable(runnerPath, "make runner-sandbox")
	if err != nil {
		return err
	}
	executorBin, err := executable(executorPath, "make executor")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cmds, err := os.MkdirTemp("", "bhyve-demo-freebsd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cmds)
	guestFiles, err := freebsdCommands(cmds)
	if err != nil {
		return err
	}
	guestFiles["/usr/local/bin/gitlab-runner"] = runnerBin

	step("Bringing up a simulated FreeBSD host (vm-bhyve, ZFS, Kea DHCP, OpenSSH) and a fake GitLab")
	start := time.Now()
	tb, err := testbed.Up(ctx, testbed.Options{
		Sim:     sim.Options{GuestFiles: guestFiles},
		Runners: []string{"bhyve-native", "bhyve-custom"},
	}, runnerBin, executorBin)
	if err != nil {
		return err
	}
	defer func() {
		step("Tearing everything down")
		if err := tb.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bhyve-demo: teardown:", err)
		}
	}()
	fmt.Printf("    up in %s: template %s@%s, GitLab at %s, settings %s\n",
		time.Since(start).Round(time.Millisecond), tb.Host.Template(), tb.Host.Snapshot(), tb.GitLab.URL(), tb.SettingsPath)

	native, err := runJob(ctx, tb, "bhyve-native", "bhyve", nil)
	if err != nil {
		return err
	}
	custom, err := runJob(ctx, tb, "bhyve-custom", "custom", tb.CustomArgs("bhyve-custom"))
	if err != nil {
		return err
	}

	step("Both front-ends, side by side")
	fmt.Printf("    %-34s %12s %12s\n", "", "native", "Custom")
	for _, row := range []struct {
		name string
		f    func(timeline) time.Duration
	}{
		{"job received -> first script line", func(t timeline) time.Duration { return t.toFirstLine }},
		{"last script line -> GitLab told", func(t timeline) time.Duration { return t.lastLineToEnd }},
		{"job received -> GitLab told", func(t timeline) time.Duration { return t.total }},
	} {
		fmt.Printf("    %-34s %12s %12s\n", row.name, ms(row.f(native)), ms(row.f(custom)))
	}
	names, err := vmNames(ctx, tb)
	if err != nil {
		return err
	}
	fmt.Printf("\n    vm list now: %v (only the template: every job VM is destroyed)\n", names)
	return nil
}

// runJob registers a runner, runs the article's job through upstream's
// `run` loop, prints its log and timings, and stops the runner gracefully.
func runJob(ctx context.Context, tb *testbed.Testbed, name, executor string, extra []string) (timeline, error) {
	step("gitlab-runner register --executor %s --name %s", executor, name)
	if _, err := tb.RegisterRunner(ctx, name, executor, extra...); err != nil {
		return timeline{}, err
	}
	if err := tb.SetGlobalKey("check_interval", "1"); err != nil {
		return timeline{}, err
	}
	p, err := tb.Launch("run", "--working-directory", tb.Dir)
	if err != nil {
		return timeline{}, err
	}
	defer p.Stop()

	id, err := tb.GitLab.Enqueue(gitlab.JobSpec{Name: "test:freebsd:amd64", Project: testbed.Project, Script: articleJob})
	if err != nil {
		return timeline{}, err
	}
	step("Job %d (%s) as GitLab shows it", id, name)
	jobCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rec, err := tb.GitLab.Wait(jobCtx, id)
	if err != nil {
		return timeline{}, fmt.Errorf("job %d: %w\nrunner log:\n%s", id, err, testbed.Plain(p.Log()))
	}
	tr := parseTrace(rec.Trace)
	fmt.Print(tr.render())
	tl := tr.timeline(rec)
	step("Where the time went (%s)", name)
	fmt.Print(tl.report(tr))

	if err := p.Signal(syscall.SIGQUIT); err != nil {
		return tl, err
	}
	if err := p.Wait(jobCtx); err != nil {
		return tl, fmt.Errorf("gitlab-runner run after SIGQUIT: %w", err)
	}
	if out, err := tb.Command(ctx, "unregister", "--name", name).CombinedOutput(); err != nil {
		return tl, fmt.Errorf("unregister %s: %w\n%s", name, err, out)
	}
	if rec.Status != gitlab.StatusSuccess {
		return tl, fmt.Errorf("job %d ended %s (%s, exit code %d)", id, rec.Status, rec.FailureReason, rec.ExitCode)
	}
	return tl, nil
}

func vmNames(ctx context.Context, tb *testbed.Testbed) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := tb.Host.VM(ctx, "list")
		if err != nil {
			return nil, err
		}
		names := listNames(r.Stdout)
		if len(names) == 1 || time.Now().After(deadline) {
			return names, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func executable(path, hint string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", errors.Join(err, fmt.Errorf("build it with `%s` (make demo does)", hint))
	}
	return abs, nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return d.Round(time.Millisecond).String()
}
