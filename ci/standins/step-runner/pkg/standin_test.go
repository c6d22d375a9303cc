// Package pkg_test checks that every step-runner feature the stand-in cannot
// provide refuses with an error naming the stand-in.
package pkg_test

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"gitlab.com/gitlab-org/moa"
	"gitlab.com/gitlab-org/moa/value"

	"gitlab.com/gitlab-org/step-runner/pkg/api/client"
	"gitlab.com/gitlab-org/step-runner/pkg/api/client/extended"
	"gitlab.com/gitlab-org/step-runner/pkg/api/expression"
	"gitlab.com/gitlab-org/step-runner/pkg/api/proxy"
	"gitlab.com/gitlab-org/step-runner/pkg/di"
)

const standIn = "sandbox stand-in for gitlab.com/gitlab-org/step-runner"

type dialer struct{ dialed bool }

func (d *dialer) Dial() (*grpc.ClientConn, error) { d.dialed = true; return nil, nil }

func TestUnavailableFeaturesRefuseNamingTheStandIn(t *testing.T) {
	d := &dialer{}
	tests := []struct {
		name string
		call func() error
	}{
		{"client", func() error { _, err := extended.New(d); return err }},
		{"service", func() error { _, err := di.NewContainer(di.WithOperatorLogger(nil)).StepRunnerService(); return err }},
		{"proxy", func() error { return proxy.Proxy(&bytes.Buffer{}, &bytes.Buffer{}, &bytes.Buffer{}) }},
		{"client calls", func() error {
			_, err := (&extended.Client{}).RunAndFollow(t.Context(), &client.RunRequest{}, &extended.FollowOutput{})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil || !strings.Contains(err.Error(), standIn) {
				t.Errorf("error = %v, want one naming the stand-in", err)
			}
		})
	}
	if d.dialed {
		t.Error("extended.New dialed step-runner before refusing")
	}
}

func TestEvaluatorReturnsLiteralTextUnmarked(t *testing.T) {
	e, err := expression.NewEvaluator(value.Null())
	if err != nil {
		t.Fatal(err)
	}
	expr, err := moa.ParseTemplate("echo hello")
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Eval("echo hello", expr)
	if err != nil || got.String() != "echo hello" || got.HasMarks(expression.Sensitive) {
		t.Errorf("Eval() = %q, %v, sensitive %v", got.String(), err, got.HasMarks(expression.Sensitive))
	}
	if !(expression.Input{Value: value.String("s").WithMarks(expression.Sensitive)}).Sensitive() {
		t.Error("an input with a Sensitive value does not report Sensitive")
	}
}
