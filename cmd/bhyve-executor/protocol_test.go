package main_test

// The real bhyve-executor binary driven through whole jobs by a stand-in for
// gitlab-runner's Custom executor (ci/customexec), against the simulated
// FreeBSD host. Root is needed (CI runs as root); nothing here skips.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

func TestProtocolScriptFailureKeepsItsExitCode(t *testing.T) {
	h := newHarness(t)
	var log bytes.Buffer
	res, err := h.runner.Run(context.Background(), customexec.Job{ID: 1002, Stages: stages("echo about to fail\nexit 3\n")}, &log)
	require.NoError(t, err)
	assert.Equal(t, customexec.ScriptFailure, res.Failure)
	assert.Equal(t, 3, res.ExitCode)
	assert.Equal(t, []string{"prepare_script:ok", "get_sources:ok", "step_script:script_failure", "after_script:ok", "upload_artifacts_on_failure:ok", "cleanup_file_variables:ok"}, res.Ran)
	assert.Contains(t, log.String(), "after_script ran")
	h.noJobVMs(t)
}

func TestProtocolSystemFailureIsRetriedAndLeavesNothing(t *testing.T) {
	h := newHarness(t, `boot_timeout = "3s"`)
	require.NoError(t, h.sim.SetFault(h.sim.Template(), sim.Fault{NoSSHD: true}))
	var log bytes.Buffer
	res, err := h.runner.Run(context.Background(), customexec.Job{ID: 1003, Stages: stages("true\n")}, &log)
	require.NoError(t, err)
	t.Logf("job log:\n%s", log.String())
	assert.Equal(t, customexec.SystemFailure, res.Failure)
	assert.Equal(t, 3, res.Prepares, "gitlab-runner retries a prepare that failed with a system failure")
	assert.Empty(t, res.Ran)
	assert.Contains(t, log.String(), "VM did not accept SSH within boot_timeout 3s")
	h.noJobVMs(t)
}

// vm-bhyve giving up before it boots (no UEFI firmware for a uefi-custom
// guest) is reported within seconds with vm-bhyve's reason. The Custom
// executor protocol cannot say "do not retry" without calling it a script
// failure, so gitlab-runner still makes its three attempts: each one fails
// at once instead of after boot_timeout (60s here).
func TestProtocolVMBhyveGivingUpBeforeBootFailsFast(t *testing.T) {
	h := newHarness(t, `allowed_images = ["nofirmware"]`)
	require.NoError(t, h.sim.AddTemplate("nofirmware", h.sim.Snapshot(), sim.WithGuestConfig("uefi-custom", "", "")))
	var log bytes.Buffer
	start := time.Now()
	res, err := h.runner.Run(context.Background(), customexec.Job{ID: 1006, Image: "nofirmware", Stages: stages("true\n")}, &log)
	took := time.Since(start)
	require.NoError(t, err)
	t.Logf("after %s, job log:\n%s", took.Round(time.Millisecond), log.String())
	assert.Equal(t, customexec.SystemFailure, res.Failure)
	assert.Equal(t, 3, res.Prepares, "upstream retries any SYSTEM_FAILURE_EXIT_CODE of prepare")
	assert.Empty(t, res.Ran)
	assert.Contains(t, log.String(), "fatal; unable to locate firmware "+h.sim.VMDir()+"/.config/BHYVE_UEFI.fd")
	assert.Contains(t, log.String(), "permanent system failure")
	assert.Less(t, took, 30*time.Second, "three quick failures and two 3s pauses, not three boot_timeouts")
	h.noJobVMs(t)
}

func TestProtocolImageNotAllowedCreatesNoVM(t *testing.T) {
	h := newHarness(t, `allowed_images = ["freebsd-1[45]", "openbsd-.*"]`)
	var log bytes.Buffer
	res, err := h.runner.Run(context.Background(), customexec.Job{ID: 1004, Image: "freebsd-evil", Stages: stages("true\n")}, &log)
	require.NoError(t, err)
	assert.Equal(t, customexec.SystemFailure, res.Failure, "the Custom executor protocol has no configuration-error exit code")
	assert.Contains(t, log.String(), "configuration error")
	assert.Contains(t, log.String(), `"freebsd-evil" is not allowed`)
	assert.Contains(t, log.String(), `"freebsd-1[45]", "openbsd-.*"`, "the refusal lists the patterns")
	assert.NotContains(t, log.String(), "Cloning")
	h.noJobVMs(t)
}

// A project-wide `default: image: node:20` reaches every job. Without
// allowed_images upstream's VM executors ignore it with a warning and run the
// default template; so does this one.
func TestProtocolImageIgnoredWithEmptyAllowedImages(t *testing.T) {
	h := newHarness(t)
	var log bytes.Buffer
	res, err := h.runner.Run(context.Background(), customexec.Job{ID: 1006, Image: "node:20", Stages: stages("echo build ok\n")}, &log)
	require.NoError(t, err)
	t.Logf("job log:\n%s", log.String())
	assert.Equal(t, customexec.NoFailure, res.Failure)
	assert.Contains(t, log.String(), "WARNING: image \"node:20\" is ignored: allowed_images is empty, so the job runs in the default template "+fmt.Sprintf("%q", h.sim.Template()))
	assert.Contains(t, log.String(), "build ok")
	h.noJobVMs(t)
}

func TestProtocolCancelMidJob(t *testing.T) {
	h := newHarness(t)
	marker := fmt.Sprintf("sleep %d", 2000+os.Getpid()%1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &syncBuffer{}
	go func() {
		// Cancel once the job's long step is running in the guest.
		for !strings.Contains(log.String(), "long step started") {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	res, err := h.runner.Run(ctx, customexec.Job{ID: 1005, Stages: stages("echo long step started\nexec " + marker + "\n")}, log)
	require.NoError(t, err)
	assert.Equal(t, customexec.Cancelled, res.Failure)
	assert.Less(t, time.Since(start), 60*time.Second, "SIGTERM ended the stage well before graceful_kill_timeout")
	assert.False(t, exec.Command("pgrep", "-f", "^"+marker+"$").Run() == nil, "the job's process in the guest is gone")
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
	go func() {
		for !strings.Contains(log.String(), "has address") {
			time.Sleep(20 * time.Millisecond)
		}
		// Bypass SIGTERM handling: kill the driver outright.
		out, _ := exec.Command("pkill", "-KILL", "-f", "bhyve-executor prepare").CombinedOutput()
		t.Logf("pkill: %s", out)
		cancel()
	}()
	res, err := h.runner.Run(ctx, customexec.Job{ID: 1006, Stages: stages("true\n")}, log)
	require.NoError(t, err)
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
