//go:build unix

package vmbhyve

import (
	"os/exec"
	"syscall"
)

// configureProcess: see ExecCommander.Run for why a process group of its own
// and SIGTERM first.
func configureProcess(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
}
