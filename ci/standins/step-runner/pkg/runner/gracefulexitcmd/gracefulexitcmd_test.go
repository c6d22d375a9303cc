package gracefulexitcmd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The script gets SIGTERM when ctx ends and may finish on its own terms.
func TestCancelSendsSIGTERMAndLetsTheScriptFinish(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	out := newOutput(t)
	cmd := New(ctx, 10*time.Second, "sh", "-c", `trap 'echo terminated; exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
	cmd.Stdout = out.file
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	cancel()
	err := cmd.Wait()
	if !strings.Contains(out.String(), "terminated") {
		t.Errorf("script output %q: the TERM trap did not run", out.String())
	}
	if cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("exit code %d, want the trap's 0 (Wait: %v)", cmd.ProcessState.ExitCode(), err)
	}
}

// A script that ignores SIGTERM is killed once the delay has passed.
func TestIgnoredSIGTERMIsFollowedByAKillAfterTheDelay(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	out := newOutput(t)
	const delay = 300 * time.Millisecond
	cmd := New(ctx, delay, "sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	cmd.Stdout = out.file
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	start := time.Now()
	cancel()
	err := cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != -1 {
		t.Errorf("Wait() = %v, want the process killed by a signal", err)
	}
	if took := time.Since(start); took < delay || took > delay+5*time.Second {
		t.Errorf("killed after %s, want about %s", took, delay)
	}
}

// output is a file the script writes to directly, so the test can read it
// while the script runs without sharing memory with os/exec.
type output struct {
	t    *testing.T
	file *os.File
}

func newOutput(t *testing.T) *output {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return &output{t: t, file: f}
}

func (o *output) String() string {
	b, err := os.ReadFile(o.file.Name())
	if err != nil {
		o.t.Fatal(err)
	}
	return string(b)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the script to start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
