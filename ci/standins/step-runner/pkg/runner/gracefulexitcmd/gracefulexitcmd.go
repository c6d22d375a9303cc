// Package gracefulexitcmd is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/pkg/runner/gracefulexitcmd, whose
// source this build machine's module proxy refuses.
package gracefulexitcmd

import (
	"context"
	"os/exec"
	"syscall"
	"time"
)

// New is exec.CommandContext, except that ending ctx sends SIGTERM instead
// of killing, and the process is killed only if it has not exited delay
// later (os/exec's WaitDelay, which also bounds how long Wait waits for
// output pipes held open by orphaned children). Unlike the real one, as
// upstream describes it, the signals go to the process, not to a process
// group: children the script leaves behind are not signalled.
func New(ctx context.Context, delay time.Duration, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = delay
	return cmd
}
