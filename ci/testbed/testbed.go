// Package testbed runs the product as an operator does, for end-to-end tests,
// benchmarks and the demo: a simulated FreeBSD host (ci/sim), a fake GitLab
// (ci/gitlab) listening on the host's bridge where runner and guests reach
// it, and the sandbox build of gitlab-runner (upstream's real register/run
// loops with our bhyve executor) as separate processes inside the host.
//
//	tb := testbed.New(t, testbed.Options{})
//	tb.Register(ctx, t, "bhyve-1", "bhyve")
//	r := tb.Start(t, "run")
//	id := tb.Enqueue(t, gitlab.JobSpec{Name: "test", Script: []string{"uname -a"}})
//	rec := tb.Wait(ctx, t, id)
package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// Environment variables naming prebuilt binaries; `make test` sets them.
const (
	EnvRunner   = "BHYVE_TEST_RUNNER"   // bin/gitlab-runner-sandbox
	EnvExecutor = "BHYVE_TEST_EXECUTOR" // bin/bhyve-executor
)

// Project is the repository every job clones unless its spec names another.
const Project = "bhyve-ci/demo"

// Options shape a testbed; the zero value is one host, one runner section.
type Options struct {
	Sim sim.Options
	// Runners are the runner names bhyve.toml gets a section for (default
	// fixture.Runner). The settings themselves live in [defaults].
	Runners []string
	// Settings are extra bhyve.toml lines for [defaults] (fixture.New's
	// form: `key = value`, `ssh.key = value`).
	Settings []string
	// GitLab options; the listener is always the host's bridge address.
	GitLab gitlab.Options
	// Files of the default project (a README if nil).
	Files map[string]string

	join *Testbed // set by Join: serve join's GitLab on this host too
}

// Testbed is one simulated bhyve host with a fake GitLab beside it.
type Testbed struct {
	Host   *sim.Host
	GitLab *gitlab.Server
	Repo   gitlab.Repo

	Dir          string // config directory: config.toml and bhyve.toml
	ConfigPath   string
	SettingsPath string
	RunnerBin    string // the sandbox gitlab-runner
	ExecutorBin  string // bhyve-executor

	closeHost func() error // set by Up: New's host goes with its test
	url       string       // GitLab as this host reaches it (set by Join)
	borrowed  bool         // GitLab belongs to another testbed (Join, Sibling)
}

// New brings up a testbed whose teardown (t.Cleanup) checks that nothing of
// the host is left.
func New(t testing.TB, o Options) *Testbed {
	t.Helper()
	runnerBin, executorBin := Binaries(t)
	tb, err := up(context.Background(), o, runnerBin, executorBin, func(so sim.Options) (*sim.Host, error) { return sim.New(t, so), nil }, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.closeGitLab() })
	return tb
}

// Up brings up a testbed outside a test (the demo); Close tears it down.
// runnerBin and executorBin are the binaries to drive.
func Up(ctx context.Context, o Options, runnerBin, executorBin string) (*Testbed, error) {
	dir, err := os.MkdirTemp("", "bhyve-testbed-")
	if err != nil {
		return nil, err
	}
	if o.Sim.Root == "" {
		// sim.Start's default root is the one shared host of `make sim-up`:
		// a second Up would attach to the first's host, and Close would
		// tear down a host someone else is using.
		o.Sim.Root = filepath.Join(dir, "sim")
	}
	var host *sim.Host
	tb, err := up(ctx, o, runnerBin, executorBin, func(so sim.Options) (*sim.Host, error) {
		h, err := sim.Start(ctx, so)
		host = h
		return h, err
	}, dir)
	if err != nil {
		if host != nil {
			host.Close()
		}
		os.RemoveAll(dir)
		return nil, err
	}
	tb.closeHost = host.Close
	return tb, nil
}

// Close stops the fake GitLab and, for a testbed from Up, tears the host
// down and removes the config directory.
func (tb *Testbed) Close() error {
	err := tb.closeGitLab()
	if tb.closeHost != nil {
		err = errors.Join(err, tb.closeHost(), os.RemoveAll(tb.Dir))
		tb.closeHost = nil
	}
	return err
}

func up(ctx context.Context, o Options, runnerBin, executorBin string, startHost func(sim.Options) (*sim.Host, error), dir string) (*Testbed, error) {
	if o.Sim.GuestFiles == nil {
		// Jobs call back into gitlab-runner inside the VM for artifacts and
		// caches, so the template has one, as a real template must.
		o.Sim.GuestFiles = map[string]string{"/usr/local/bin/gitlab-runner": runnerBin}
	}
	h, err := startHost(o.Sim)
	if err != nil {
		return nil, fmt.Errorf("simulated host: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	tb := &Testbed{
		Host:         h,
		Dir:          dir,
		ConfigPath:   filepath.Join(dir, "config.toml"),
		SettingsPath: filepath.Join(dir, "bhyve.toml"),
		RunnerBin:    runnerBin,
		ExecutorBin:  executorBin,
	}
	runners := o.Runners
	if len(runners) == 0 {
		runners = []string{fixture.Runner}
	}
	if err := fixture.WriteSharedSettings(h, tb.SettingsPath, runners, o.Settings...); err != nil {
		return nil, fmt.Errorf("write bhyve.toml: %w", err)
	}

	ln, err := h.Listen(ctx, "tcp", net.JoinHostPort(h.HostAddr().String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("listen on the host's bridge: %w", err)
	}
	if o.join != nil {
		return joinGitLab(tb, o.join, ln)
	}
	gopts := o.GitLab
	gopts.Listener = ln
	if gopts.LongPoll == 0 {
		gopts.LongPoll = 2 * time.Second
	}
	srv, err := gitlab.Start(gopts)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("start fake GitLab: %w", err)
	}
	tb.GitLab = srv

	files := o.Files
	if files == nil {
		files = map[string]string{"README.md": "# demo\n"}
	}
	if tb.Repo, err = srv.AddRepo(ctx, Project, files); err != nil {
		srv.Close()
		return nil, fmt.Errorf("add repository: %w", err)
	}
	return tb, nil
}

// Binaries returns the sandbox runner and bhyve-executor, prebuilt by make
// (runner-sandbox, executor) or named by EnvRunner and EnvExecutor. A test
// without them fails: it must never pass by testing nothing.
func Binaries(t testing.TB) (runner, executor string) {
	t.Helper()
	runner, executor, err := FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	return runner, executor
}

// FindBinaries is Binaries outside a test (the bench).
func FindBinaries() (runner, executor string, err error) {
	root := repoRoot()
	runner = firstNonEmpty(os.Getenv(EnvRunner), filepath.Join(root, "bin", "gitlab-runner-sandbox"))
	executor = firstNonEmpty(os.Getenv(EnvExecutor), filepath.Join(root, "bin", "bhyve-executor"))
	for _, p := range []struct{ path, make string }{{runner, "make runner-sandbox"}, {executor, "make executor"}} {
		if st, err := os.Stat(p.path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", "", fmt.Errorf("%s is missing or not executable: build it with `%s` (make test does)", p.path, p.make)
		}
	}
	return runner, executor, nil
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Command is gitlab-runner run as the FreeBSD host's service user would run
// it: inside the host, with the host's `vm` on PATH. args start with the
// subcommand (global flags such as --debug may precede it); --config is
// added where the subcommand takes it.
func (tb *Testbed) Command(ctx context.Context, args ...string) *exec.Cmd {
	for i, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		if takesConfig(a) {
			args = append(append(append([]string{}, args[:i+1]...), "--config", tb.ConfigPath), args[i+1:]...)
		}
		break
	}
	cmd := tb.Host.Command(ctx, tb.RunnerBin, args...)
	cmd.Dir = tb.Dir
	// The sidecar is found next to config.toml, as operators install it; an
	// override left in the environment (make sim-up exports one) must not
	// point the runner elsewhere.
	cmd.Env = append(withoutEnv(cmd.Env, "BHYVE_EXECUTOR_CONFIG", "BHYVE_EXECUTOR_RUNNER"), "HOME="+tb.Dir)
	return cmd
}

func takesConfig(sub string) bool {
	switch sub {
	case "register", "unregister", "verify", "list", "run", "reset-token":
		return true
	}
	return false
}

func withoutEnv(env []string, keys ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// Register registers a runner called name with GitLab's newer flow (an
// authentication token created in the UI, then `register --token glrt-...`),
// the way the README tells operators to. It returns register's output.
func (tb *Testbed) Register(ctx context.Context, t testing.TB, name, executor string, extra ...string) string {
	t.Helper()
	out, err := tb.RegisterRunner(ctx, name, executor, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RegisterRunner is Register returning its error.
func (tb *Testbed) RegisterRunner(ctx context.Context, name, executor string, extra ...string) (string, error) {
	token := tb.GitLab.CreateRunner(name)
	args := []string{"register", "--non-interactive",
		"--url", tb.URL(), "--token", token,
		"--executor", executor, "--name", name}
	out, err := tb.Command(ctx, append(args, extra...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("gitlab-runner register: %w\n%s", err, out)
	}
	return string(out), nil
}

// CustomArgs are the [runners.custom] flags that point a stock runner at
// bhyve-executor exactly as the README shows.
func (tb *Testbed) CustomArgs(name string) []string {
	var args []string
	for _, stage := range []string{"config", "prepare", "run", "cleanup"} {
		args = append(args, "--custom-"+stage+"-exec", tb.ExecutorBin)
		for _, a := range []string{"--config", tb.SettingsPath, "--runner", name, stage} {
			args = append(args, "--custom-"+stage+"-args", a)
		}
	}
	return args
}

// SetGlobal sets a top-level key of config.toml (concurrent, check_interval,
// listen_address, shutdown_timeout), as an operator edits it after
// register; value is TOML.
func (tb *Testbed) SetGlobal(t testing.TB, key, value string) {
	t.Helper()
	if err := tb.SetGlobalKey(key, value); err != nil {
		t.Fatal(err)
	}
}

// SetGlobalKey is SetGlobal returning its error.
func (tb *Testbed) SetGlobalKey(key, value string) error {
	b, err := os.ReadFile(tb.ConfigPath)
	if err != nil {
		return err
	}
	line := key + " = " + value
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` = .*$`)
	s := string(b)
	if re.MatchString(s) {
		s = re.ReplaceAllLiteralString(s, line)
	} else {
		s = line + "\n" + s
	}
	return os.WriteFile(tb.ConfigPath, []byte(s), 0o600)
}

// Enqueue queues a job on the default project unless spec names one.
func (tb *Testbed) Enqueue(t testing.TB, spec gitlab.JobSpec) int64 {
	t.Helper()
	if spec.Project == "" {
		spec.Project = Project
	}
	id, err := tb.GitLab.Enqueue(spec)
	if err != nil {
		t.Fatalf("enqueue %s: %v", spec.Name, err)
	}
	return id
}

// Wait waits for a job's final state and fails the test on timeout, with
// the trace so far.
func (tb *Testbed) Wait(ctx context.Context, t testing.TB, id int64) gitlab.JobRecord {
	t.Helper()
	rec, err := tb.GitLab.Wait(ctx, id)
	if err != nil {
		cur, _ := tb.GitLab.Job(id)
		t.Fatalf("job %d (%s) did not finish: %v; status %q, trace so far:\n%s", id, cur.Name, err, cur.Status, cur.Trace)
	}
	return rec
}

// VMs lists the host's VMs by name (`vm list`), templates included.
func (tb *Testbed) VMs(ctx context.Context, t testing.TB) []string {
	t.Helper()
	names, err := tb.listVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func (tb *Testbed) listVMs(ctx context.Context) ([]string, error) {
	r, err := tb.Host.VM(ctx, "list")
	if err != nil {
		return nil, fmt.Errorf("vm list: %w", err)
	}
	var names []string
	for i, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// WaitOnlyTemplates waits until `vm list` shows nothing but templates: every
// job VM is destroyed.
func (tb *Testbed) WaitOnlyTemplates(ctx context.Context, t testing.TB, templates ...string) {
	t.Helper()
	if len(templates) == 0 {
		templates = []string{tb.Host.Template()}
	}
	var left []string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		left = left[:0]
		for _, n := range tb.VMs(ctx, t) {
			if !contains(templates, n) {
				left = append(left, n)
			}
		}
		if len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("job VMs left on the host: %v", left)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// String names the testbed in failure messages.
func (tb *Testbed) String() string {
	return fmt.Sprintf("testbed(host %s, gitlab %s)", tb.Host.ID(), tb.URL())
}
