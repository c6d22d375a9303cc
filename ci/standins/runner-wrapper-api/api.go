// Package api is a sandbox stand-in for
// gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api, the types of
// the gRPC API `gitlab-runner wrapper` serves to manage the runner process it
// wraps. See README.md.
package api

import (
	"context"
	"errors"

	"github.com/sirupsen/logrus"
)

// ErrProcessNotInitialized: there is no wrapped process (not started yet, or
// already gone).
var ErrProcessNotInitialized = errors.New("wrapped process not initialized")

// ErrStandIn is what the stand-in reports wherever the real module would talk
// to a client.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api: " +
	"the wrapper's gRPC API is not served in this build")

// Status is the wrapped process's state.
type Status int

const (
	StatusUnknown Status = iota
	StatusRunning
	StatusInShutdown
	StatusStopped
)

func (s Status) String() string {
	switch s {
	case StatusRunning:
		return "running"
	case StatusInShutdown:
		return "in_shutdown"
	case StatusStopped:
		return "stopped"
	default:
		return "unknown"
	}
}

// ShutdownCallbackDef is where to report that the wrapped process has stopped.
type ShutdownCallbackDef interface {
	URL() string
	Method() string
}

// InitGracefulShutdownRequest asks for a graceful shutdown, optionally with a
// callback to call once the process is gone.
type InitGracefulShutdownRequest interface {
	ShutdownCallbackDef() ShutdownCallbackDef
}

// ShutdownCallback reports that the wrapped process has stopped.
type ShutdownCallback interface {
	Run(ctx context.Context)
}

// NewShutdownCallback returns a callback for def. The stand-in's callback
// sends nothing: it logs, at error level, that the request was not sent.
// (Upstream registers one only on a gRPC request, which this build never
// serves, so it is not expected to run at all.)
func NewShutdownCallback(log logrus.FieldLogger, def ShutdownCallbackDef) ShutdownCallback {
	return &shutdownCallback{ShutdownCallbackDef: def, log: log}
}

// shutdownCallback is also its definition, as upstream's tests expect of the
// real one.
type shutdownCallback struct {
	ShutdownCallbackDef
	log logrus.FieldLogger
}

func (c *shutdownCallback) Run(context.Context) {
	c.log.WithError(ErrStandIn).
		WithField("target", c.URL()).
		WithField("method", c.Method()).
		Error("Shutdown callback not sent")
}
