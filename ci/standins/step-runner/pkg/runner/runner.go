// Package runner is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/pkg/runner, whose source this build
// machine's module proxy refuses: the builtin-function contract upstream's
// functions/concrete and functions/script_legacy implement. Nothing in the
// stand-in calls a builtin.
package runner

import (
	"context"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"gitlab.com/gitlab-org/step-runner/proto"
)

// Kind is the kind an input must have.
type Kind int

const (
	KindString Kind = iota
	KindBool
	KindList
)

// BuiltinFunction is a step implemented in Go (builtin://name). Upstream
// implements it.
type BuiltinFunction interface {
	Spec() *proto.Spec
	Run(ctx context.Context, builtinCtx BuiltinContext) (BuiltinResult, error)
}

// BuiltinContext is what step-runner hands a running builtin.
type BuiltinContext interface {
	GetInput(name string, kind Kind) (*structpb.Value, error)
	GetInputWithDefault(name string, kind Kind, inputs map[string]*proto.Spec_Content_Input) (*structpb.Value, error)
	GetJobVars() map[string]*structpb.Value
	GetEnvs() map[string]string
	GetEnvList() []string
	Pipe() (stdout, stderr io.Writer)
	WorkDir() string
	// ListenCancel returns a context done when step-runner's Cancel API is
	// called for the job.
	ListenCancel(ctx context.Context) (context.Context, context.CancelFunc)
	GracefulExitDelay() time.Duration
}

// BuiltinResult is a builtin's outcome beyond its error. Upstream's builtins
// return only the zero value.
type BuiltinResult struct{}
