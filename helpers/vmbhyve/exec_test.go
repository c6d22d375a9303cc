package vmbhyve

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

func TestExecCommander(t *testing.T) {
	c := ExecCommander{}

	t.Run("argv reaches the program untouched, no shell", func(t *testing.T) {
		stdout, stderr, err := c.Run(context.Background(), []string{"/bin/echo", "a b", "$HOME", "`x`;", "*"})
		require.NoError(t, err)
		assert.Equal(t, "a b $HOME `x`; *\n", string(stdout))
		assert.Empty(t, stderr)
	})

	t.Run("stdin is /dev/null, so prompts see EOF", func(t *testing.T) {
		stdout, _, err := c.Run(context.Background(), []string{"/bin/cat"})
		require.NoError(t, err)
		assert.Empty(t, stdout)
	})

	t.Run("exit status and stderr", func(t *testing.T) {
		_, stderr, err := c.Run(context.Background(), []string{"/bin/sh", "-c", "echo oops >&2; exit 3"})
		require.Error(t, err)
		var exit interface{ ExitCode() int }
		require.ErrorAs(t, err, &exit)
		assert.Equal(t, 3, exit.ExitCode())
		assert.Equal(t, "oops\n", string(stderr))
	})

	t.Run("cancellation stops the program", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, _, err := c.Run(ctx, []string{"/bin/sleep", "30"})
		require.Error(t, err, "sleep 30 must not have run to completion")
		assert.ErrorIs(t, err, context.Canceled)
		var exit interface{ ExitCode() int }
		require.ErrorAs(t, err, &exit)
		assert.Equal(t, -1, exit.ExitCode(), "killed by a signal")
	})

	t.Run("an already ended context runs nothing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		marker := filepath.Join(t.TempDir(), "ran")
		_, _, err := c.Run(ctx, []string{"/usr/bin/touch", marker})
		assert.ErrorIs(t, err, context.Canceled)
		assert.NoFileExists(t, marker)
	})

	t.Run("a background child holding the pipes does not hang Run", func(t *testing.T) {
		// What `vm start` would do if _run kept vm's stdout open.
		c := ExecCommander{WaitDelay: 100 * time.Millisecond}
		stdout, _, err := c.Run(context.Background(), []string{"/bin/sh", "-c", "/bin/sleep 3 & echo started"})
		assert.ErrorIs(t, err, exec.ErrWaitDelay)
		assert.Equal(t, "started\n", string(stdout))
	})

	t.Run("empty argv", func(t *testing.T) {
		_, _, err := c.Run(context.Background(), nil)
		assert.Error(t, err)
	})
}

// TestDriverWithExecCommander runs the Driver against real processes: the
// failures the operator must fix, and a hung vm that ctx must end.
func TestDriverWithExecCommander(t *testing.T) {
	t.Run("missing vm binary", func(t *testing.T) {
		d := &Driver{VM: []string{"/nonexistent/sbin/vm"}, VMDir: t.TempDir()}
		_, err := d.List(context.Background())
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrMissingBinary)
		assert.Equal(t, failure.Config, failure.KindOf(err))
		assert.Contains(t, err.Error(), "/nonexistent/sbin/vm does not exist")
		assert.Contains(t, err.Error(), "sysutils/vm-bhyve")
	})

	t.Run("missing privilege program", func(t *testing.T) {
		d := &Driver{VM: []string{"/usr/local/sbin/vm"}, Privilege: []string{"/nonexistent/bin/doas", "-n"}}
		_, err := d.List(context.Background())
		assert.ErrorIs(t, err, ErrMissingBinary)
		assert.Contains(t, err.Error(), "/nonexistent/bin/doas is not installed")
		assert.Contains(t, err.Error(), "privilege setting")
	})

	t.Run("privilege prefix asking for a password", func(t *testing.T) {
		// A stand-in for `sudo -n` that refuses the way sudo does.
		fakeSudo := filepath.Join(t.TempDir(), "sudo")
		require.NoError(t, os.WriteFile(fakeSudo, []byte("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"), 0o755))
		d := &Driver{VM: []string{"/usr/local/sbin/vm"}, Privilege: []string{fakeSudo, "-n"}}
		_, err := d.List(context.Background())
		assert.ErrorIs(t, err, ErrPrivilege)
		assert.Contains(t, err.Error(), "NOPASSWD")
	})

	t.Run("a hung vm is killed when ctx ends", func(t *testing.T) {
		// With VM = {"/bin/sleep", "30"} the argv would be
		// `/bin/sleep 30 destroy -f ci-1`, which GNU sleep rejects at
		// once, so a two-line script stands in for a vm that hangs.
		hung := filepath.Join(t.TempDir(), "vm")
		require.NoError(t, os.WriteFile(hung, []byte("#!/bin/sh\nexec /bin/sleep 30\n"), 0o755))
		d := &Driver{VM: []string{hung}}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := d.Destroy(ctx, "ci-1")
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var ce *CommandError
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, -1, ce.ExitCode)
		assert.False(t, errors.Is(err, ErrMissingBinary))
	})
}
