// Package bhyve adapts the runner-agnostic job-VM core to upstream GitLab
// Runner's executor API. It holds no behaviour of its own: it maps upstream
// calls onto the core and core failures onto upstream's BuildError reasons.
package bhyve

import (
	"errors"

	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"
)

type executor struct {
	executors.AbstractExecutor
}

func (e *executor) Prepare(options common.ExecutorPrepareOptions) error {
	if err := e.AbstractExecutor.Prepare(options); err != nil {
		return err
	}
	return &common.BuildError{Inner: errors.New("bhyve: not wired yet"), FailureReason: common.ConfigurationError}
}

func (e *executor) Run(cmd common.ExecutorCommand) error {
	return errors.New("bhyve: not wired yet")
}
