package bhyve

import (
	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"
)

// ExecutorName is the value of `executor` in config.toml.
const ExecutorName = "bhyve"

// NewProvider returns the bhyve provider. It must not touch the host: upstream
// constructs and validates every provider at every process start, including
// the artifact and cache helper commands that run inside job VMs.
func NewProvider() common.ExecutorProvider {
	return executors.DefaultExecutorProvider{
		Creator:          func() common.Executor { return &executor{} },
		FeaturesUpdater:  func(f *common.FeaturesInfo) { f.Variables = true },
		DefaultShellName: "bash",
	}
}
