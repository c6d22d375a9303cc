// Package client is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/pkg/api/client, whose source this build
// machine's module proxy refuses: the request and status types upstream
// exchanges with step-runner.
package client

import "time"

// RunRequest asks step-runner to run one job's steps.
type RunRequest struct {
	Id        string //nolint:revive // field name is upstream's
	Timeout   *time.Duration
	WorkDir   string
	BuildDir  string
	Env       map[string]string
	Steps     string
	Variables []Variable
}

// Variable is one CI variable handed to the steps.
type Variable struct {
	Key    string
	Value  string
	File   bool
	Masked bool
}

// State is where a job run by step-runner stands.
type State int

const (
	StateUnspecified State = iota
	StateRunning
	StateSuccess
	StateFailure
	StateCancelled
)

var stateNames = [...]string{
	StateUnspecified: "unspecified",
	StateRunning:     "running",
	StateSuccess:     "success",
	StateFailure:     "failure",
	StateCancelled:   "cancelled",
}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// ErrorKind classifies why a job did not succeed; upstream maps it to a
// failure reason.
type ErrorKind int

const (
	ErrorUnspecified ErrorKind = iota
	ErrorUnknown
	ErrorInternal
	ErrorStepFailure
	ErrorCancelled
	ErrorTimeout
)

// Status is the outcome of a job.
type Status struct {
	State     State
	ErrorKind ErrorKind
	Message   string
}
