package failure

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKindOf(t *testing.T) {
	tests := map[string]struct {
		err      error
		kind     Kind
		exitCode int
	}{
		"script exit":            {err: &ScriptError{Code: 3}, kind: Script, exitCode: 3},
		"wrapped script exit":    {err: fmt.Errorf("stage build: %w", &ScriptError{Code: 42}), kind: Script, exitCode: 42},
		"config error":           {err: Configf("template %q: not allowed", "x"), kind: Config},
		"wrapped config error":   {err: fmt.Errorf("prepare: %w", Configf("bad")), kind: Config},
		"plain error":            {err: errors.New("ssh: connection lost"), kind: System},
		"context deadline":       {err: fmt.Errorf("wait for lease: %w", context.DeadlineExceeded), kind: System},
		"config wrapping system": {err: Configf("identity_file: %w", errors.New("permission denied")), kind: Config},
		"permanent":              {err: fmt.Errorf("boot: %w", &PermanentError{Err: errors.New("fatal; unable to locate firmware")}), kind: Permanent},
		"config beats permanent": {err: Configf("x: %w", &PermanentError{Err: errors.New("y")}), kind: Config},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tt.kind, KindOf(tt.err))
			assert.Equal(t, tt.exitCode, ExitCode(tt.err))
		})
	}
}

func TestConfigfKeepsCause(t *testing.T) {
	cause := errors.New("no such file")
	err := Configf("ssh.identity_file %q: %w", "/nope", cause)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, `ssh.identity_file "/nope": no such file`, err.Error())
}

func TestScriptErrorMessage(t *testing.T) {
	assert.Equal(t, "job script exited with status 2", (&ScriptError{Code: 2}).Error())
	assert.Equal(t, "job script killed by signal TERM (exit status 143)", (&ScriptError{Code: 143, Signal: "TERM"}).Error())
}
