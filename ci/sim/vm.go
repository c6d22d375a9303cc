package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Result is what a command printed and how it exited.
type Result struct {
	Stdout   string
	Stderr   string
	ExitCode int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%sstderr:\n%s", r.ExitCode, r.Stdout, r.Stderr)
}

// VM runs the installed fake vm inside the host namespace with stdin at EOF
// (which answers every vm-bhyve prompt with yes).
func (h *Host) VM(ctx context.Context, args ...string) (Result, error) {
	return h.run(ctx, "", h.VMCommand(), args...)
}

// VMInput runs the fake vm with the given stdin.
func (h *Host) VMInput(ctx context.Context, stdin string, args ...string) (Result, error) {
	return h.run(ctx, stdin, h.VMCommand(), args...)
}

// Sysrc runs the installed fake sysrc.
func (h *Host) Sysrc(ctx context.Context, args ...string) (Result, error) {
	return h.run(ctx, "", h.SysrcCommand(), args...)
}

func (h *Host) run(ctx context.Context, stdin, name string, args ...string) (Result, error) {
	cmd := h.Command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.ExitCode = ee.ExitCode()
	default:
		return r, fmt.Errorf("run %s: %w", name, err)
	}
	return r, nil
}
