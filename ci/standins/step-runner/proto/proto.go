// Package proto is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/proto, generated protobuf/gRPC code whose
// source this build machine's module proxy refuses. The messages upstream
// builds or reads are plain structs with protobuf-style nil-safe getters; no
// message is ever put on the wire.
package proto

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ValueType is the type of a step input.
type ValueType int32

//nolint:revive // names follow protobuf's generated style, as upstream spells them
const (
	ValueType_value_type_unspecified ValueType = iota
	ValueType_string
	ValueType_number
	ValueType_boolean
	ValueType_struct
	ValueType_array
)

// Spec declares a step's inputs.
type Spec struct {
	Spec *Spec_Content
}

func (s *Spec) GetSpec() *Spec_Content {
	if s == nil {
		return nil
	}
	return s.Spec
}

//nolint:revive // protobuf's generated name for the nested message
type Spec_Content struct {
	Inputs map[string]*Spec_Content_Input
}

func (c *Spec_Content) GetInputs() map[string]*Spec_Content_Input {
	if c == nil {
		return nil
	}
	return c.Inputs
}

//nolint:revive // protobuf's generated name for the nested message
type Spec_Content_Input struct {
	Type      ValueType
	Default   *structpb.Value
	Sensitive bool
}

func (i *Spec_Content_Input) GetType() ValueType {
	if i == nil {
		return ValueType_value_type_unspecified
	}
	return i.Type
}

func (i *Spec_Content_Input) GetDefault() *structpb.Value {
	if i == nil {
		return nil
	}
	return i.Default
}

func (i *Spec_Content_Input) GetSensitive() bool { return i != nil && i.Sensitive }

// StepResult is where a job stands, as the service reports it.
type StepResult int32

//nolint:revive // protobuf's generated style, as upstream spells them
const (
	StepResult_unspecified StepResult = iota
	StepResult_running
	StepResult_success
	StepResult_failure
	StepResult_cancelled
)

// StatusError_Kind classifies a job's failure.
//
//nolint:revive // protobuf's generated name for the nested enum
type StatusError_Kind int32

//nolint:revive // protobuf's generated style
const (
	StatusError_unspecified StatusError_Kind = iota
	StatusError_unknown
	StatusError_internal
	StatusError_step_failure
	StatusError_cancelled
	StatusError_timeout
)

// The service's messages, as far as upstream's in-process test server
// (steps/stepstest) fills or reads them.
type (
	RunRequest         struct{}
	RunResponse        struct{}
	CancelRequest      struct{ Id string } //nolint:revive // field name is upstream's
	CancelResponse     struct{}
	FollowLogsRequest  struct{ Id string } //nolint:revive // field name is upstream's
	FollowLogsResponse struct{}
	StatusRequest      struct{ Id string } //nolint:revive // field name is upstream's
	StatusResponse     struct{ Jobs []*Status }
	CloseRequest       struct{ Id string } //nolint:revive // field name is upstream's
	CloseResponse      struct{}
)

// Status is one job's status.
type Status struct {
	Id        string //nolint:revive // field name is upstream's
	Status    StepResult
	StartTime *timestamppb.Timestamp
	EndTime   *timestamppb.Timestamp
	Error     *StatusError
}

// StatusError is why a job failed.
type StatusError struct {
	Kind    StatusError_Kind
	Message string
}

// StepRunnerServer is step-runner's gRPC service. Upstream's in-process
// test server implements it; the stand-in has no implementation (di's
// StepRunnerService refuses).
type StepRunnerServer interface {
	Run(context.Context, *RunRequest) (*RunResponse, error)
	Cancel(context.Context, *CancelRequest) (*CancelResponse, error)
	FollowLogs(*FollowLogsRequest, grpc.ServerStreamingServer[FollowLogsResponse]) error
	Status(context.Context, *StatusRequest) (*StatusResponse, error)
	Close(context.Context, *CloseRequest) (*CloseResponse, error)
	mustEmbedUnimplementedStepRunnerServer()
}

// UnimplementedStepRunnerServer answers every RPC with gRPC's Unimplemented;
// implementations embed it, as with generated code.
type UnimplementedStepRunnerServer struct{}

func unimplemented(rpc string) error {
	return status.Errorf(codes.Unimplemented, "method %s not implemented", rpc)
}

func (UnimplementedStepRunnerServer) Run(context.Context, *RunRequest) (*RunResponse, error) {
	return nil, unimplemented("Run")
}

func (UnimplementedStepRunnerServer) Cancel(context.Context, *CancelRequest) (*CancelResponse, error) {
	return nil, unimplemented("Cancel")
}

func (UnimplementedStepRunnerServer) FollowLogs(*FollowLogsRequest, grpc.ServerStreamingServer[FollowLogsResponse]) error {
	return unimplemented("FollowLogs")
}

func (UnimplementedStepRunnerServer) Status(context.Context, *StatusRequest) (*StatusResponse, error) {
	return nil, unimplemented("Status")
}

func (UnimplementedStepRunnerServer) Close(context.Context, *CloseRequest) (*CloseResponse, error) {
	return nil, unimplemented("Close")
}

func (UnimplementedStepRunnerServer) mustEmbedUnimplementedStepRunnerServer() {}

// RegisterStepRunnerServer registers nothing: the stand-in has no wire
// format for these messages, so a server gets no step-runner service and
// every step-runner RPC a client makes fails with gRPC's Unimplemented
// ("unknown service"). Only upstream's test server reaches it; di's
// StepRunnerService refuses before the runner's own callers do.
func RegisterStepRunnerServer(grpc.ServiceRegistrar, StepRunnerServer) {}
