// Package connector is a sandbox stand-in for
// gitlab.com/gitlab-org/fleeting/fleeting/connector. Dialing and running
// commands on an instance fail with an error naming the stand-in. See
// ../README.md.
package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
)

// ErrStandIn is returned by every call that would reach an instance.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/fleeting/fleeting/connector: " +
	"the instance and docker-autoscaler executors cannot run in this build")

// Client is a connection to an instance.
type Client interface {
	Dial(network string, address string) (net.Conn, error)
	DialRun(ctx context.Context, command string) (net.Conn, error)
	Run(ctx context.Context, opts RunOptions) error
	Close() error
}

// RunOptions is one command to run on an instance. Upstream converts its own
// executors.RunOptions into this type, so the fields must stay exactly those.
type RunOptions struct {
	Command string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// DialOptions says how to reach an instance.
type DialOptions struct {
	UseExternalAddr bool
	// DialFn, when set, makes the underlying connection (a tunnel through
	// another instance, for example).
	DialFn func(ctx context.Context, network, address string) (net.Conn, error)
}

// ConnectorOptions combines the options of Run.
type ConnectorOptions struct {
	RunOptions
	DialOptions
}

// DialFn is the shape of Dial, which upstream swaps for tests.
type DialFn func(ctx context.Context, info provider.ConnectInfo, options DialOptions) (Client, error)

// Dial would connect to the instance info describes.
func Dial(ctx context.Context, info provider.ConnectInfo, options DialOptions) (Client, error) {
	return nil, fmt.Errorf("dialing instance %q: %w", info.ID, ErrStandIn)
}

// Run would dial the instance and run opts.RunOptions.Command on it.
func Run(ctx context.Context, info provider.ConnectInfo, opts ConnectorOptions) error {
	return fmt.Errorf("running %q on instance %q: %w", opts.Command, info.ID, ErrStandIn)
}

// ExitError is a command's non-zero exit on an instance. Nothing here runs a
// command, so nothing here returns one; the type exists for errors.As.
type ExitError struct {
	code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// ExitCode is the command's exit status.
func (e *ExitError) ExitCode() int { return e.code }
