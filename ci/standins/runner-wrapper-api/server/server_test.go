package server_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	runnerwrapper "gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api"
	"gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api/server"
)

// server.New is handed upstream's own wrapper; the interface must match it.
var _ server.Wrapper = (*runnerwrapper.Wrapper)(nil)

type runningWrapper struct{}

func (runningWrapper) Status() api.Status                                             { return api.StatusRunning }
func (runningWrapper) FailureReason() string                                          { return "" }
func (runningWrapper) InitiateGracefulShutdown(api.InitGracefulShutdownRequest) error { return nil }
func (runningWrapper) InitiateForcefulShutdown() error                                { return nil }

// `gitlab-runner wrapper` runs Listen in a goroutine and drops its result, so
// the stand-in must say at error level that the API is not served, and must
// not leave the port open with nobody answering: a client has to be refused.
func TestListenRefusesAndSaysSo(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	addr := l.Addr().String()

	logger, hook := test.NewNullLogger()
	srv := server.New(logger.WithField("grpc-listen-addr", addr), runningWrapper{})
	err = srv.Listen(l)
	srv.Stop()

	if !errors.Is(err, api.ErrStandIn) {
		t.Fatalf("Listen = %v, want an error wrapping %v", err, api.ErrStandIn)
	}
	const name = "sandbox stand-in for gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api:"
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error %q does not name the stand-in", err)
	}

	entry := hook.LastEntry()
	if entry == nil || entry.Level != logrus.ErrorLevel {
		t.Fatalf("want an error-level log entry, got %v", entry)
	}
	if logged, _ := entry.Data[logrus.ErrorKey].(error); !errors.Is(logged, api.ErrStandIn) {
		t.Errorf("logged error = %v, want the stand-in error", entry.Data[logrus.ErrorKey])
	}

	if c, err := net.Dial("tcp", addr); err == nil {
		_ = c.Close()
		t.Errorf("%s still accepts connections after Listen", addr)
	}
}

type callbackDef struct{}

func (callbackDef) URL() string    { return "http://127.0.0.1:1/shutdown" }
func (callbackDef) Method() string { return "POST" }

func TestShutdownCallbackSaysItSendsNothing(t *testing.T) {
	logger, hook := test.NewNullLogger()
	cb := api.NewShutdownCallback(logger, callbackDef{})
	cb.Run(t.Context())

	entry := hook.LastEntry()
	if entry == nil || entry.Level != logrus.ErrorLevel || entry.Data["target"] != (callbackDef{}).URL() {
		t.Fatalf("want an error-level entry naming the target, got %v", entry)
	}
	if def, ok := cb.(api.ShutdownCallbackDef); !ok || def.Method() != "POST" {
		t.Errorf("the callback should also be its definition, as upstream's tests expect")
	}
}
