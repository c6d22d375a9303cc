// Command bench measures the speed claims of gitlab-runner-bhyve side by side
// in one run on a simulated FreeBSD host (ci/sim) and prints one table of
// ratios, then one TARGET line per claim. `make bench` runs it:
//
//	GOWORK=off go run ./ci/bench [-rows 1,2,3,4,5] [-v]
//
// Progress goes to stderr; the table and the TARGET lines to stdout. The exit
// status is 0 when every row was measured, whether or not its target was
// met, and 1 when the bench itself failed. See README.md for what each row
// measures and how to read it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == streamChildCommand {
		os.Exit(streamChild(os.Args[2:]))
	}
	os.Exit(run())
}

// bench is what every row shares.
type bench struct {
	ctx      context.Context
	h        *sim.Host
	tmp      string
	settings string // bhyve.toml for runner fixture.Runner, no pool
	pool     string // the same plus a warm pool (row 1)
	executor string // bhyve-executor, built for this run (row 2)
	self     string // this program, re-executed for row 4's streaming child
	simBin   string // the bhyve-sim build the host runs on
	verbose  bool
	start    time.Time

	host  *jobvm.Host // VMs the rows create directly, held by this process
	vm    *jobvm.VM   // the job VM rows 2 and 4 share (sharedVM)
	jobID atomic.Int64
}

// progress writes a line to stderr.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %6.1fs: %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// debugf writes diagnostics from the code under test when -v is set.
func (b *bench) debugf(format string, args ...any) {
	if b.verbose {
		b.progress("  | "+format, args...)
	}
}

func (b *bench) nextJob() int64 { return b.jobID.Add(1) }

// loadSettings reads the bench's plain settings (no pool).
func (b *bench) loadSettings() (*settings.Settings, error) {
	return settings.Load(b.settings, fixture.Runner)
}

// nsCommand runs argv as the FreeBSD host would: inside the simulated
// host's network namespace. `ip netns exec` execs argv in place, so the
// process is argv itself (signals, exit status and rusage are its own).
func (b *bench) nsCommand(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", b.h.NetNS()}, argv...)...)
	// A group of its own, killed whole when ctx ends (^C reaches the bench,
	// which cancels ctx).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// rowFunc measures one row of the table.
type rowFunc func(b *bench) ([]row, []target, error)

type rowSpec struct {
	id      string
	what    string
	targets []target // reported as not measured if the row fails
	fn      rowFunc
}

// rowSpecs lists the rows in the order they run. Row 1 must come before any
// row that creates VMs through bench.host: its provider sweeps the runner's
// VMs on first use, and a jobvm sweep judges every VM recorded with this
// process as holder but absent from its own Host's held set an orphan, so it
// would destroy VMs that another Host of the same process is using.
func rowSpecs() []rowSpec {
	return []rowSpec{
		{id: "3", what: "lease lookup, 1M-row Kea file", fn: leaseRow, targets: []target{
			unmeasured("lease_lookup_vs_grep", "<=1.5x"), unmeasured("poll_reads_only_new_bytes", "<=1.0x")}},
		{id: "1", what: "job start latency", fn: startRow, targets: []target{
			unmeasured("warm_start_vs_bare_ssh", "<=2.0x")}},
		{id: "2", what: "per-stage overhead, 10 stages", fn: stagesRow, targets: []target{
			unmeasured("per_stage_overhead_vs_fresh_ssh", ">=10.0x")}},
		{id: "4", what: "streaming 1GiB of job output", fn: streamRow, targets: []target{
			unmeasured("streaming_throughput_vs_ssh", ">=0.8x"), unmeasured("streaming_memory_vs_xcrypto_control", "<=1.1x")}},
		{id: "5", what: "8 concurrent cold jobs", fn: concurrencyRow},
		{id: "6", what: "jobs through `gitlab-runner run` vs its shell executor", fn: runnerRow, targets: []target{
			unmeasured("job_start_warm_vs_shell", "<=1.5x"), unmeasured("job_end_vs_shell", "<=10.0x")}},
		{id: "7", what: "scale-out: 2 hosts vs 1 host", fn: scaleRow},
	}
}

func run() (status int) {
	rowsFlag := flag.String("rows", "1,2,3,4,5,6,7", "comma-separated rows to measure")
	verbose := flag.Bool("v", false, "show diagnostics of the code under test on stderr")
	flag.Parse()
	want := map[string]bool{}
	for _, r := range strings.Split(*rowsFlag, ",") {
		id := strings.TrimSpace(r)
		if !slices.ContainsFunc(rowSpecs(), func(s rowSpec) bool { return s.id == id }) {
			fmt.Fprintf(os.Stderr, "bench: -rows: there is no row %q (rows are 1 to 7)\n", id)
			return 2
		}
		want[id] = true
	}

	// ^C and SIGTERM end the measurements; the deferred teardown still runs
	// (the handler stays installed until then, so a second ^C does not cut
	// the teardown short).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{ctx: ctx, verbose: *verbose, start: time.Now()}
	err := b.setup()
	defer func() {
		if terr := b.teardown(); terr != nil {
			fmt.Fprintf(os.Stderr, "bench: teardown: %v\n", terr)
			status = 1
		}
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: setup: %v\n", err)
		return 1
	}

	var rows []row
	targets := map[string][]target{}
	failed := false
	for _, spec := range rowSpecs() {
		if !want[spec.id] {
			continue
		}
		if ctx.Err() != nil {
			failed = true
			break
		}
		b.progress("row %s: %s", spec.id, spec.what)
		rs, ts, err := spec.fn(b)
		if err != nil {
			failed = true
			b.progress("row %s FAILED: %v", spec.id, err)
			rs = append(rs, failedRow(spec.id, spec.what, err))
			ts = spec.targets
		}
		rows = append(rows, rs...)
		targets[spec.id] = ts
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 1
	}
	// Rows run in the order that keeps the host quietest (the lease file
	// first, before any VM exists); they are reported in table order.
	slices.SortStableFunc(rows, func(x, y row) int { return strings.Compare(x.ID, y.ID) })
	fmt.Print(formatTable(rows))
	fmt.Println()
	ids := slices.Sorted(maps.Keys(targets))
	for _, id := range ids {
		for _, t := range targets[id] {
			fmt.Println(t)
		}
	}
	b.progress("done")
	if failed {
		return 1
	}
	return 0
}

// setup brings up the simulated host, writes the settings and builds
// bhyve-executor.
func (b *bench) setup() error {
	if os.Geteuid() != 0 {
		return errors.New("the simulated host needs root (network namespaces, bridges, mounts)")
	}
	for _, tool := range []string{"ip", "ssh", "grep", "go", "/usr/bin/time"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed: %w (GNU time is Debian's package time)", tool, err)
		}
	}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.tmp, err = os.MkdirTemp("", "bhyve-bench-"); err != nil {
		return err
	}

	// Build bhyve-executor while the host comes up.
	built := make(chan error, 1)
	go func() { built <- b.buildExecutor() }()

	b.progress("building the simulator and bhyve-executor")
	if b.simBin, err = sim.Binary(); err != nil {
		<-built
		return err
	}
	b.progress("starting the simulated FreeBSD host in %s", filepath.Join(b.tmp, "sim"))
	sctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	h, err := sim.Start(sctx, sim.Options{Root: filepath.Join(b.tmp, "sim"), Binary: b.simBin})
	if err != nil {
		<-built
		return fmt.Errorf("simulated host: %w", err)
	}
	b.h = h

	b.settings = filepath.Join(b.tmp, "bhyve.toml")
	if err := fixture.WriteSettings(h, b.settings); err != nil {
		return err
	}
	b.pool = filepath.Join(b.tmp, "bhyve-pool.toml")
	if err := fixture.WriteSettings(h, b.pool, `[runners."sim-runner".pool]`, "idle_count = 1", "max_concurrent_boots = 1"); err != nil {
		return err
	}
	if b.host, err = jobvm.NewHost(os.Getpid(), true); err != nil {
		return err
	}
	b.host.Dialer = h
	b.host.Logf = b.debugf
	if err := <-built; err != nil {
		return err
	}
	b.progress("host %s is up (netns %s)", h.HostName(), h.NetNS())
	return nil
}

func (b *bench) buildExecutor() error {
	b.executor = filepath.Join(b.tmp, "bhyve-executor")
	cmd := exec.CommandContext(b.ctx, "go", "build", "-o", b.executor, "gitlab.com/bhyve-ci/gitlab-runner-bhyve/cmd/bhyve-executor")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build bhyve-executor (run the bench from inside the module): %w\n%s", err, out)
	}
	return nil
}

// teardown removes every VM, process, namespace and file of the run.
func (b *bench) teardown() error {
	var errs []error
	if err := b.closeSharedVM(); err != nil {
		errs = append(errs, err)
	}
	if b.h != nil {
		b.progress("tearing the simulated host down")
		if err := b.h.Close(); err != nil {
			errs = append(errs, err)
		}
		if r := b.h.Resources(); !r.Empty() {
			errs = append(errs, fmt.Errorf("the simulated host left resources behind:\n%s", r))
		}
	} else if b.simBin != "" {
		// Start failed half-way: remove whatever it made.
		_ = exec.Command(b.simBin, "--root", filepath.Join(b.tmp, "sim"), "down").Run()
	}
	if b.simBin != "" && os.Getenv("BHYVE_SIM_BINARY") == "" {
		// sim.Binary built it for this process; nobody else uses it.
		_ = os.Remove(b.simBin)
	}
	if b.tmp != "" {
		if err := os.RemoveAll(b.tmp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
