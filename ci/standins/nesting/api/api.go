// Package api is a sandbox stand-in for gitlab.com/gitlab-org/fleeting/nesting/api,
// the client of the nesting daemon that runs nested VMs on an autoscaled
// instance (the autoscaler's VM isolation). Connecting fails with an error
// naming the stand-in. See ../README.md.
package api

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"

	"gitlab.com/gitlab-org/fleeting/nesting/hypervisor"
)

// ErrStandIn is returned by every call that would reach the nesting daemon.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/fleeting/nesting: " +
	"the instance and docker-autoscaler executors cannot run in this build")

var (
	// ErrNotInitialized: the daemon needs Init before this call.
	ErrNotInitialized = errors.New("nesting: not initialized")
	// ErrAlreadyInitialized: Init was called on an initialized daemon.
	ErrAlreadyInitialized = errors.New("nesting: already initialized")
)

// Client talks to a nesting daemon.
type Client interface {
	Init(ctx context.Context, config []byte) error
	Create(ctx context.Context, image string, slot *int32) (vm hypervisor.VirtualMachine, stompedVMID *string, err error)
	Delete(ctx context.Context, id string) error
	List(ctx context.Context) ([]hypervisor.VirtualMachine, error)
	Close() error
}

// NewClientConn would open a gRPC connection to the daemon at host through
// dialer. The stand-in has no nesting protocol, so it fails with ErrStandIn.
func NewClientConn(host string, dialer func(ctx context.Context, network, address string) (net.Conn, error)) (*grpc.ClientConn, error) {
	return nil, fmt.Errorf("connecting to nesting daemon %q: %w", host, ErrStandIn)
}

// New returns a client on conn whose every call fails with ErrStandIn.
// Upstream only calls it after NewClientConn succeeded, which never happens here.
func New(conn grpc.ClientConnInterface) Client { return client{} }

type client struct{}

func (client) Init(context.Context, []byte) error { return ErrStandIn }

func (client) Create(context.Context, string, *int32) (hypervisor.VirtualMachine, *string, error) {
	return nil, nil, ErrStandIn
}

func (client) Delete(context.Context, string) error { return ErrStandIn }

func (client) List(context.Context) ([]hypervisor.VirtualMachine, error) { return nil, ErrStandIn }

func (client) Close() error { return nil }
