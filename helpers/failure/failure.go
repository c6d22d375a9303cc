// Package failure classifies why a job did not succeed. Both front-ends map
// these kinds onto their own vocabulary in exactly one place: the native
// executor onto upstream's BuildError reasons, bhyve-executor onto the Custom
// executor's exit codes.
//
// The rule is: the job's own script exiting non-zero is a script failure;
// something the operator must fix (settings, an image the job may not use) is
// a configuration error; infrastructure trouble that will happen again on
// every attempt (vm-bhyve refusing to run the guest at all) is a permanent
// system failure; everything else is infrastructure trouble, a system
// failure, which may be retried.
package failure

import (
	"errors"
	"fmt"
)

// Kind is the class of a failure.
type Kind int

const (
	// System is the default: VM, network, SSH or host trouble.
	System Kind = iota
	// Script means the job script ran and exited non-zero.
	Script
	// Config means the operator's settings or the job's image choice are wrong.
	Config
	// Permanent is a system failure that retrying cannot fix, e.g. vm-bhyve's
	// `vm _run` giving up before it boots anything because the host lacks
	// the UEFI firmware. It is still the host's fault, not the job's.
	Permanent
)

func (k Kind) String() string {
	switch k {
	case Script:
		return "script failure"
	case Config:
		return "configuration error"
	case Permanent:
		return "permanent system failure"
	default:
		return "system failure"
	}
}

// ConfigError reports settings or job input the operator must fix. Its message
// says what is wrong and what is expected.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Configf builds a ConfigError from a format string; %w is honoured.
func Configf(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// PermanentError reports a system failure that would recur on every attempt,
// so a front-end must not retry it.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// ScriptError reports that the job script exited with a non-zero status.
type ScriptError struct {
	Code   int
	Signal string // set when the remote process died from a signal
}

func (e *ScriptError) Error() string {
	if e.Signal != "" {
		return fmt.Sprintf("job script killed by signal %s (exit status %d)", e.Signal, e.Code)
	}
	return fmt.Sprintf("job script exited with status %d", e.Code)
}

// KindOf classifies err. A nil error has no kind and reports System; callers
// check for nil first.
func KindOf(err error) Kind {
	var se *ScriptError
	if errors.As(err, &se) {
		return Script
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return Config
	}
	var pe *PermanentError
	if errors.As(err, &pe) {
		return Permanent
	}
	return System
}

// ExitCode is the script's exit status for a script failure, 0 otherwise.
func ExitCode(err error) int {
	var se *ScriptError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
