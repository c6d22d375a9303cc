// Package extended is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/pkg/api/client/extended, whose source
// this build machine's module proxy refuses. New refuses: there is no
// step-runner client in this build, so native steps fail loudly.
package extended

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"gitlab.com/gitlab-org/step-runner/internal/standin"
	"gitlab.com/gitlab-org/step-runner/pkg/api/client"
)

// Dialer opens the gRPC connection to step-runner. Upstream implements it
// (steps' stdio dialer, concrete's unix socket dialer).
type Dialer interface {
	Dial() (*grpc.ClientConn, error)
}

// FollowOutput is where a followed job's log goes.
type FollowOutput struct {
	Logs io.Writer
}

// Client talks to step-runner. The stand-in never hands one out.
type Client struct{}

var errNoClient = standin.Unavailable("the step-runner client (native steps: run:, FF_SCRIPT_TO_STEP_MIGRATION, FF_CONCRETE)")

// New refuses without dialing.
func New(Dialer) (*Client, error) {
	return nil, errNoClient
}

func (*Client) RunAndFollow(context.Context, *client.RunRequest, *FollowOutput) (client.Status, error) {
	return client.Status{}, errNoClient
}

func (*Client) Cancel(context.Context, string) error { return errNoClient }

func (*Client) CloseConn() error { return nil }
