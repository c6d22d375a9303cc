package taskscaler_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"gitlab.com/gitlab-org/fleeting/fleeting"
	"gitlab.com/gitlab-org/fleeting/fleeting/connector"
	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
	nestingapi "gitlab.com/gitlab-org/fleeting/nesting/api"
	"gitlab.com/gitlab-org/fleeting/taskscaler"
	"gitlab.com/gitlab-org/fleeting/taskscaler/storage"
)

// Every entry point upstream's autoscaler calls before it could run a job on
// an instance must fail with an error that names the stand-in module, so that
// the instance and docker-autoscaler executors fail where an operator sees it
// instead of doing nothing. The calls are listed in the order upstream's
// provider.init and acquisitionRef.Prepare make them.
func TestStandInsFailLoudly(t *testing.T) {
	const cannotRun = "the instance and docker-autoscaler executors cannot run in this build"
	info := provider.ConnectInfo{ID: "i-1"}

	tests := []struct {
		name     string
		module   string
		sentinel error
		call     func(t *testing.T) error
	}{
		{
			name:     "state storage",
			module:   "gitlab.com/gitlab-org/fleeting/taskscaler/storage",
			sentinel: storage.ErrStandIn,
			call: func(t *testing.T) error {
				s, err := storage.NewFileStorage(t.TempDir())
				if s != nil {
					t.Errorf("NewFileStorage returned a storage %v with its error", s)
				}
				return err
			},
		},
		{
			name:     "plugin",
			module:   "gitlab.com/gitlab-org/fleeting/fleeting",
			sentinel: fleeting.ErrStandIn,
			call: func(t *testing.T) error {
				r, err := fleeting.RunPlugin("/usr/bin/fleeting-plugin-aws", []byte(`{}`),
					fleeting.WithPluginLogger(hclog.NewNullLogger()))
				if r != nil {
					t.Errorf("RunPlugin returned a runner with its error")
				}
				return err
			},
		},
		{
			name:     "taskscaler",
			module:   "gitlab.com/gitlab-org/fleeting/taskscaler",
			sentinel: taskscaler.ErrStandIn,
			call: func(t *testing.T) error {
				ts, err := taskscaler.New(t.Context(), nil,
					taskscaler.WithReservations(), taskscaler.WithMaxInstances(3))
				if ts != nil {
					t.Errorf("New returned a taskscaler with its error")
				}
				return err
			},
		},
		{
			name:     "instance ready command",
			module:   "gitlab.com/gitlab-org/fleeting/fleeting/connector",
			sentinel: connector.ErrStandIn,
			call: func(t *testing.T) error {
				return connector.Run(t.Context(), info, connector.ConnectorOptions{
					RunOptions: connector.RunOptions{Command: "exit 0"},
				})
			},
		},
		{
			name:     "dial instance",
			module:   "gitlab.com/gitlab-org/fleeting/fleeting/connector",
			sentinel: connector.ErrStandIn,
			call: func(t *testing.T) error {
				c, err := connector.Dial(t.Context(), info, connector.DialOptions{UseExternalAddr: true})
				if c != nil {
					t.Errorf("Dial returned a client with its error")
				}
				return err
			},
		},
		{
			name:     "nesting daemon",
			module:   "gitlab.com/gitlab-org/fleeting/nesting",
			sentinel: nestingapi.ErrStandIn,
			call: func(t *testing.T) error {
				conn, err := nestingapi.NewClientConn("unix:///var/run/nesting.sock", nil)
				if conn != nil {
					t.Errorf("NewClientConn returned a connection with its error")
				}
				return err
			},
		},
		{
			name:     "nesting client",
			module:   "gitlab.com/gitlab-org/fleeting/nesting",
			sentinel: nestingapi.ErrStandIn,
			call: func(t *testing.T) error {
				_, _, err := nestingapi.New(nil).Create(context.Background(), "image", nil)
				return err
			},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("error = %v, want one wrapping %v", err, tt.sentinel)
			}
			for _, want := range []string{"sandbox stand-in for " + tt.module + ":", cannotRun} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}
