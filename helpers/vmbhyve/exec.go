package vmbhyve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// Commander runs one program and returns its output. err is nil when the
// program exited 0; for a non-zero exit it must carry the status through an
// `ExitCode() int` method somewhere in its chain (as *exec.ExitError does), so
// the driver can tell "ran and failed" from "could not run".
type Commander interface {
	Run(ctx context.Context, argv []string) (stdout, stderr []byte, err error)
}

// ExecCommander runs programs with os/exec, stdin at /dev/null.
//
// stdin matters: vm-bhyve's util::confirm (lib/vm-util) loops on `read`, and
// at EOF the loop ends with status 0, so every prompt (destroy, poweroff,
// stop in the bootloader stage) counts as "yes" instead of hanging.
type ExecCommander struct {
	// WaitDelay bounds the wait after ctx ends (or after the program exits
	// while something it started still holds its output pipes) before the
	// program is killed and the pipes are closed. Zero means 5 seconds.
	WaitDelay time.Duration
}

const defaultWaitDelay = 5 * time.Second

// Run starts argv[0] directly (no shell) in its own process group, so a
// terminal's ^C aimed at the runner never reaches vm-bhyve's background
// `vm _run` (core::__start starts it with `&`, in vm's process group), whose
// death would leak taps and /dev/vmm entries. On cancellation the program
// gets SIGTERM, which sudo relays to the command it runs (doas execs the
// command, which then gets it directly); a SIGKILL could not be relayed, and
// the runner may lack the right to signal root's processes itself. SIGKILL
// follows after WaitDelay. The returned error wraps ctx.Err() when the
// context ended the run.
func (c ExecCommander) Run(ctx context.Context, argv []string) ([]byte, []byte, error) {
	if len(argv) == 0 {
		return nil, nil, errors.New("empty command")
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = nil // os/exec opens os.DevNull
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = c.WaitDelay
	if cmd.WaitDelay <= 0 {
		cmd.WaitDelay = defaultWaitDelay
	}
	configureProcess(cmd)
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return stdout.Bytes(), stderr.Bytes(), err
}
