// Command bhyve-demo runs one CI job, end to end, through the real
// bhyve-executor binary on a simulated FreeBSD host, the way a stock
// gitlab-runner with the Custom executor would, and shows where the time
// went. `make demo` builds everything and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/customexec"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// The article's sample job (ifconfig, netstat -rn, sockstat -4l,
// freebsd-version, uname -a). The simulated guest runs the machine's Linux
// userland, so each FreeBSD command falls back to its Linux counterpart.
const jobScript = `run() {
  echo "\$ $1"
  if command -v "${1%% *}" >/dev/null 2>&1; then sh -c "$1"; else echo "(${1%% *} is FreeBSD's; the simulated guest runs Linux: $2)"; sh -c "$2"; fi
  echo
}
run ifconfig "ip -brief address"
run "netstat -rn" "ip route"
run "sockstat -4l" "ss -4ltn"
run freebsd-version "uname -sr"
run "uname -a" "uname -a"
`

func main() {
	executor := flag.String("executor", "bin/bhyve-executor", "the bhyve-executor binary to drive")
	root := flag.String("root", "/var/tmp/bhyve-demo", "state directory of the simulated host (removed afterwards)")
	flag.Parse()
	if err := run(*executor, *root); err != nil {
		fmt.Fprintln(os.Stderr, "bhyve-demo:", err)
		os.Exit(1)
	}
}

func run(executor, root string) error {
	exe, err := filepath.Abs(executor)
	if err != nil {
		return err
	}
	if _, err := os.Stat(exe); err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	step("Bringing up a simulated FreeBSD host (vm-bhyve, ZFS, Kea DHCP, OpenSSH) in %s", root)
	start := time.Now()
	h, err := sim.Start(ctx, sim.Options{Root: root})
	if err != nil {
		return err
	}
	defer func() {
		step("Tearing the simulated host down")
		if err := h.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bhyve-demo: teardown:", err)
		}
	}()
	settings := filepath.Join(root, "bhyve.toml")
	if err := fixture.WriteSettings(h, settings); err != nil {
		return err
	}
	fmt.Printf("    host up in %s; template %s@%s; executor settings %s\n",
		time.Since(start).Round(time.Millisecond), h.Template(), h.Snapshot(), settings)

	with := func(args ...string) []string { return append([]string{exe}, args...) }
	runner := &customexec.Runner{
		ConfigExec: with("config"), PrepareExec: with("prepare"), RunExec: with("run"), CleanupExec: with("cleanup"),
		// bhyve-executor acts from the FreeBSD host: inside its namespace.
		Wrap: []string{"ip", "netns", "exec", h.NetNS()},
		Env:  append(os.Environ(), "BHYVE_EXECUTOR_CONFIG="+settings),
	}
	job := customexec.Job{
		ID: 4242,
		Stages: []customexec.Stage{
			{Name: "prepare_script", Script: "echo \"Running on $(hostname) via bhyve-executor...\"\n"},
			{Name: "get_sources", Script: "mkdir -p /builds/demo/project && cd /builds/demo/project && echo 'Fetched sources (simulated)'\n"},
			{Name: "step_script", Script: jobScript},
			{Name: "after_script", Script: "echo \"after_script: job files live in $(cd /builds && pwd) on the guest only\"\n", When: customexec.Always},
			{Name: "cleanup_file_variables", Script: "true\n", When: customexec.Always},
		},
	}

	step("Running job %d through %s (config, prepare, run x%d, cleanup)", job.ID, executor, len(job.Stages))
	log := &jobLog{w: os.Stdout}
	res, err := runner.Run(ctx, job, log)
	if err != nil {
		return err
	}
	fmt.Println()
	step("Cleanup stage (runner log)")
	fmt.Print(indent(res.Cleanup))

	step("Where the time went")
	report(os.Stdout, res, log.String())
	if res.Failure != customexec.NoFailure {
		return fmt.Errorf("the job ended with %s (exit code %d)", res.Failure, res.ExitCode)
	}
	step("Job succeeded; its VM is destroyed")
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// jobLog streams the job log to the terminal as it arrives and keeps a copy
// for the timing report.
type jobLog struct {
	w io.Writer
	b strings.Builder
}

func (l *jobLog) Write(p []byte) (int, error) {
	l.b.Write(p)
	return l.w.Write(p)
}

func (l *jobLog) String() string { return l.b.String() }

// readyLine is what prepare prints once the VM answers SSH, e.g.
// "ci-x is ready: 1.3s (clone 9ms, boot 217ms, address 77ms, ssh 1.0s)".
var readyLine = regexp.MustCompile(`is ready: \S+ \(([^)]*)\)`)

func report(w io.Writer, res customexec.Result, log string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var total time.Duration
	for _, p := range res.Phases {
		total += p.Took
		fmt.Fprintf(tw, "    %s\t%s\t\n", p.Name, p.Took.Round(time.Millisecond))
		if p.Name == "prepare" {
			if m := readyLine.FindStringSubmatch(log); m != nil {
				for _, part := range strings.Split(m[1], ", ") {
					name, took, _ := strings.Cut(part, " ")
					fmt.Fprintf(tw, "      %s\t%s\t\n", name, took)
				}
			}
		}
	}
	fmt.Fprintf(tw, "    total\t%s\t\n", total.Round(time.Millisecond))
	tw.Flush()
}
