// Package server is a sandbox stand-in for
// gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api/server, the
// gRPC server of `gitlab-runner wrapper`. It serves nothing: Listen logs an
// error naming the stand-in, closes the listener so clients are refused
// instead of left hanging, and returns the error. See ../README.md.
package server

import (
	"errors"
	"fmt"
	"net"

	"github.com/sirupsen/logrus"

	"gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api"
)

// Wrapper is the wrapped process as the API manages it; upstream's
// runner_wrapper.Wrapper implements it.
type Wrapper interface {
	Status() api.Status
	FailureReason() string
	InitiateGracefulShutdown(req api.InitGracefulShutdownRequest) error
	InitiateForcefulShutdown() error
}

// Server would serve the API for one wrapper.
type Server struct {
	log     logrus.FieldLogger
	wrapper Wrapper
}

// New returns a server for w logging to log.
func New(log logrus.FieldLogger, w Wrapper) *Server {
	return &Server{log: log, wrapper: w}
}

// Listen would serve the API on l until Stop. The stand-in closes l at once
// and returns an error wrapping api.ErrStandIn, having logged it: upstream
// runs Listen in a goroutine and drops its result.
func (s *Server) Listen(l net.Listener) error {
	err := fmt.Errorf("listening on %s: %w", l.Addr(), api.ErrStandIn)
	s.log.WithError(err).
		WithField("wrapped_status", s.wrapper.Status().String()).
		Error("Wrapper gRPC API not started; the wrapped process runs unmanaged")
	if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		return errors.Join(err, fmt.Errorf("closing listener: %w", cerr))
	}
	return err
}

// Stop would stop serving; nothing is served.
func (s *Server) Stop() {}
