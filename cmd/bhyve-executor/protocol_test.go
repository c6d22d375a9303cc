package main_test

// The real bhyve-executor binary driven through whole jobs by a stand-in for
// gitlab-runner's Custom executor (ci/customexec), against the simulated
// FreeBSD host. Root is needed (CI runs as root); nothing here skips.
//
// How jobs fail (script exit codes, retried and permanent system failures,
// refused and ignored images, cancel) is tested through upstream's real
// custom executor in ci/e2e. What stays here needs to act between the
// protocol's steps, which upstream's loop gives no handle on: the config
// stage's JSON, and a driver SIGKILLed at a chosen moment of prepare.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/customexec"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// driver builds bhyve-executor once per test process.
func driver(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "bhyve-executor-test")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "bhyve-executor")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

type harness struct {
	sim    *fixture.Host
	runner *customexec.Runner
}

func newHarness(t *testing.T, extra ...string) *harness {
	t.Helper()
	h := fixture.New(t, sim.Options{}, extra...)
	bin := driver(t)
	with := func(args ...string) []string { return append([]string{bin}, args...) }
	return &harness{
		sim: h,
		runner: &customexec.Runner{
			ConfigExec:  with("config"),
			PrepareExec: with("prepare"),
			RunExec:     with("run"),
			CleanupExec: with("cleanup"),
			// The driver acts as the FreeBSD host: inside the host namespace.
			Wrap:                []string{"ip", "netns", "exec", h.NetNS()},
			Env:                 append(os.Environ(), "BHYVE_EXECUTOR_CONFIG="+h.SettingsPath),
			GracefulKillTimeout: 20 * time.Second,
			ForceKillTimeout:    5 * time.Second,
		},
	}
}

func stages(step string) []customexec.Stage {
	return []customexec.Stage{
		{Name: "prepare_script", Script: "echo \"Running on $(hostname)...\"\n", When: customexec.OnSuccess},
		{Name: "get_sources", Script: "mkdir -p /builds/project && cd /builds/project && echo fetched > README\n", When: customexec.OnSuccess},
		{Name: "step_script", Script: step, When: customexec.OnSuccess},
		{Name: "after_script", Script: "echo after_script ran\n", When: customexec.Always},
		{Name: "upload_artifacts_on_failure", Script: "echo uploading on failure\n", When: customexec.OnFailure},
		{Name: "cleanup_file_variables", Script: "true\n", When: customexec.Always},
	}
}

// noJobVMs asserts that only templates are left on the host.
func (h *harness) noJobVMs(t *testing.T) {
	t.Helper()
	out, err := exec.Command(h.sim.VMCommand(), "list").Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.NotEmpty(t, lines)
	templates := map[string]bool{}
	for _, name := range h.sim.Templates() {
		templates[name] = true
	}
	for _, line := range lines[1:] {
		assert.True(t, templates[strings.Fields(line)[0]], "only the header and templates remain:\n%s", out)
	}
}

func TestProtocolSuccessfulJob(t *testing.T) {
	h := newHarness(t)
	var log bytes.Buffer
	res, err := h.runner.Run(context.Background(), customexec.Job{
		ID: 1001, Image: "", Stages: stages("cd /builds/project && cat README && uname -s && echo build ok\n"),
	}, &log)
	require.NoError(t, err)
	t.Logf("job log:\n%s\ncleanup log:\n%s", log.String(), res.Cleanup)

	assert.Equal(t, customexec.NoFailure, res.Failure)
	assert.Equal(t, []string{"prepare_script:ok", "get_sources:ok", "step_script:ok", "after_script:ok", "cleanup_file_variables:ok"}, res.Ran)
	assert.Equal(t, "/builds", res.Config["builds_dir"])
	assert.Equal(t, false, res.Config["builds_dir_is_shared"])
	assert.Equal(t, "ci-sim-runner-1001-0", res.Config["hostname"])
	assert.Equal(t, "bash", res.Config["shell"])
	assert.Equal(t, "bhyve-executor", res.Config["driver"].(map[string]any)["name"])
	assert.Contains(t, log.String(), "Running on ci-sim-runner-1001-0...")
	assert.Contains(t, log.String(), "fetched\nLinux\nbuild ok\n")
	assert.Contains(t, res.Cleanup, "ci-sim-runner-1001-0 destroyed")
	h.noJobVMs(t)
}

func TestProtocolDriverKilledDuringPrepareIsCleanedUp(t *testing.T) {
	// gitlab-runner SIGKILLs a driver that ignores SIGTERM for too long. A
	// prepare killed mid-boot leaves a VM; the cleanup stage must find and
	// destroy it from the job's identity alone.
	h := newHarness(t)
	require.NoError(t, h.sim.SetFault(h.sim.Template(), sim.Fault{SSHDelay: time.Minute}))
	h.runner.GracefulKillTimeout = 100 * time.Millisecond // SIGTERM, then SIGKILL at once

	ctx, cancel := context.WithCancel(context.Background())
	log := &syncBuffer{}
	killed := make(chan error, 1)
	go func() {
		for !strings.Contains(log.String(), "has address") {
			time.Sleep(20 * time.Millisecond)
		}
		// Bypass SIGTERM handling: kill the driver outright. Only this test
		// process's build of it: other tests on the machine run their own.
		out, err := exec.Command("pkill", "-KILL", "-f", "^"+regexp.QuoteMeta(driver(t))+" prepare").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("pkill: %w %s", err, out)
		}
		killed <- err
		cancel()
	}()
	res, err := h.runner.Run(ctx, customexec.Job{ID: 1006, Stages: stages("true\n")}, log)
	require.NoError(t, err)
	require.NoError(t, <-killed, "the driver was SIGKILLed mid-prepare")
	t.Logf("job log:\n%s\ncleanup:\n%s", log.String(), res.Cleanup)
	assert.NotEqual(t, customexec.NoFailure, res.Failure)
	assert.Contains(t, res.Cleanup, "ci-sim-runner-1006-0 destroyed")
	h.noJobVMs(t)
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
