// Package di is a sandbox stand-in for gitlab.com/gitlab-org/step-runner/pkg/di,
// whose source this build machine's module proxy refuses. A Container
// collects upstream's builtins and logger as the real one does, but
// StepRunnerService refuses, so `steps serve` and the in-process step-runner
// fail loudly.
package di

import (
	"log/slog"

	"gitlab.com/gitlab-org/step-runner/internal/standin"
	"gitlab.com/gitlab-org/step-runner/pkg/runner"
	"gitlab.com/gitlab-org/step-runner/proto"
)

// Container wires a step-runner service.
type Container struct {
	builtins       map[string]runner.BuiltinFunction
	operatorLogger *slog.Logger
}

func NewContainer(opts ...func(*Container)) *Container {
	c := &Container{builtins: map[string]runner.BuiltinFunction{}}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// WithBuiltinFunc registers fn as builtin://name.
func WithBuiltinFunc(name string, fn runner.BuiltinFunction) func(*Container) {
	return func(c *Container) { c.builtins[name] = fn }
}

// WithOperatorLogger sends step-runner's operator-facing logs to l.
func WithOperatorLogger(l *slog.Logger) func(*Container) {
	return func(c *Container) { c.operatorLogger = l }
}

// StepRunnerService refuses: the stand-in has no step-runner service.
func (c *Container) StepRunnerService() (proto.StepRunnerServer, error) {
	return nil, standin.Unavailable("the step-runner service (steps serve, native steps)")
}
