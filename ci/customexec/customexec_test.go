package customexec

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// driver writes a shell script standing in for a Custom executor driver.
func driver(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "driver")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755))
	return path
}

func runner(bin string) *Runner {
	return &Runner{
		ConfigExec: []string{bin, "config"}, PrepareExec: []string{bin, "prepare"},
		RunExec: []string{bin, "run"}, CleanupExec: []string{bin, "cleanup"},
		GracefulKillTimeout: 300 * time.Millisecond, ForceKillTimeout: 2 * time.Second,
		PrepareRetryDelay: 10 * time.Millisecond,
	}
}

var job = Job{ID: 7, Image: "img", Stages: []Stage{
	{Name: "step_script", Script: "x"},
	{Name: "after_script", Script: "y", When: Always},
	{Name: "upload_artifacts_on_failure", Script: "z", When: OnFailure},
}}

func TestEnvironmentArgvAndExitCodes(t *testing.T) {
	bin := driver(t, `
case "$1" in
config) echo '{"builds_dir":"/b","cache_dir":"/c"}' ;;
prepare) echo "prepare job=$CUSTOM_ENV_CI_JOB_ID image=$CUSTOM_ENV_CI_JOB_IMAGE tmp=$TMPDIR pwd=$(pwd) bfec=$BUILD_FAILURE_EXIT_CODE sfec=$SYSTEM_FAILURE_EXIT_CODE" ;;
run)
  echo "run $3 $(cat "$2") $(stat -c %a "$2")"
  if [ "$3" = step_script ]; then echo 42 > "$BUILD_EXIT_CODE_FILE"; exit "$BUILD_FAILURE_EXIT_CODE"; fi ;;
cleanup) echo cleaned ;;
esac`)
	var log bytes.Buffer
	res, err := runner(bin).Run(context.Background(), job, &log)
	require.NoError(t, err)
	assert.Equal(t, "/b", res.Config["builds_dir"])
	assert.Equal(t, ScriptFailure, res.Failure)
	assert.Equal(t, 42, res.ExitCode)
	assert.Equal(t, []string{"step_script:script_failure", "after_script:ok", "upload_artifacts_on_failure:ok"}, res.Ran)
	assert.Regexp(t, `prepare job=7 image=img tmp=(\S+) pwd=(\S+) bfec=1 sfec=2`, log.String())
	assert.Contains(t, log.String(), "run step_script x 700")
	assert.Equal(t, "cleaned\n", res.Cleanup)
}

func TestSystemFailureInPrepareIsRetriedWithCleanupBetween(t *testing.T) {
	bin := driver(t, `
case "$1" in
config) echo '{}' ;;
prepare) echo attempt >> "$COUNT"; exit 2 ;;
cleanup) echo cleanup >> "$COUNT" ;;
esac`)
	count := filepath.Join(t.TempDir(), "count")
	r := runner(bin)
	r.Env = append(os.Environ(), "COUNT="+count)
	res, err := r.Run(context.Background(), job, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, SystemFailure, res.Failure)
	assert.Equal(t, 3, res.Prepares)
	data, _ := os.ReadFile(count)
	assert.Equal(t, "attempt\ncleanup\nattempt\ncleanup\nattempt\ncleanup\n", string(data), "cleanup after each failed attempt and at the end")
}

func TestUnknownExitCodeAndBadCodeFile(t *testing.T) {
	bin := driver(t, `
case "$1" in
config) echo '{}' ;;
run) if [ "$3" = step_script ]; then echo nonsense > "$BUILD_EXIT_CODE_FILE"; exit 1; fi; exit 7 ;;
esac`)
	res, err := runner(bin).Run(context.Background(), job, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, UnknownFail, res.Failure, "a code file that is not a number is an unknown failure, as upstream")
	assert.Equal(t, []string{"step_script:unknown_failure", "after_script:unknown_failure", "upload_artifacts_on_failure:unknown_failure"}, res.Ran)
}

func TestCancelSendsSIGTERMThenSIGKILLToTheProcessGroup(t *testing.T) {
	marks := t.TempDir()
	bin := driver(t, `
case "$1" in
config) echo '{}' ;;
run)
  trap 'echo term >> "$MARKS/log"' TERM
  echo started >> "$MARKS/log"
  while :; do sleep 0.05; done ;;
esac`)
	r := runner(bin)
	r.Env = append(os.Environ(), "MARKS="+marks)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if b, _ := os.ReadFile(filepath.Join(marks, "log")); strings.Contains(string(b), "started") {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	res, err := r.Run(ctx, job, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, Cancelled, res.Failure)
	assert.Less(t, time.Since(start), 5*time.Second)
	b, _ := os.ReadFile(filepath.Join(marks, "log"))
	assert.Equal(t, "started\nterm\n", string(b), "SIGTERM first; the driver ignored it, so SIGKILL ended it")
}
