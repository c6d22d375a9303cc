package bhyve

import (
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/common/spec"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// These tests compile only where every upstream module is available (the
// project's full-access pipeline); elsewhere `make typecheck` checks them.
// The behaviour behind the adapter is tested in helpers/provider and
// helpers/jobvm on the simulated host.

func TestProviderPassesUpstreamValidationWithoutTouchingTheHost(t *testing.T) {
	p := NewProvider()
	require.NoError(t, common.ValidateExecutorProvider(p))
	assert.Equal(t, "bash", p.GetDefaultShell())

	var features common.FeaturesInfo
	require.NoError(t, p.GetFeatures(&features))
	assert.True(t, features.Variables)

	_, managed := p.(common.ManagedExecutorProvider)
	assert.True(t, managed, "Shutdown drains the warm pools")
	c, collector := p.(prometheus.Collector)
	require.True(t, collector, "upstream only serves metrics of providers that are collectors")
	require.NoError(t, prometheus.NewRegistry().Register(c))
}

func TestBuildErrorMapping(t *testing.T) {
	system := errors.New("ssh: connection lost")
	tests := map[string]struct {
		err      error
		reason   spec.JobFailureReason
		exitCode int
		plain    bool
	}{
		"script exit code": {err: fmt.Errorf("stage: %w", &failure.ScriptError{Code: 42}), reason: common.ScriptFailure, exitCode: 42},
		"killed by signal": {err: &failure.ScriptError{Code: 137, Signal: "SIGKILL"}, reason: common.ScriptFailure, exitCode: 137},
		"bad settings":     {err: failure.Configf("bhyve.toml: boot_timeout: bad"), reason: common.ConfigurationError},
		"system failure":   {err: system, plain: true},
		"permanent system failure": {
			err:    fmt.Errorf("boot: %w", &failure.PermanentError{Err: errors.New("fatal; unable to locate firmware")}),
			reason: common.RunnerSystemFailure,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := buildError(tt.err)
			if tt.plain {
				assert.Same(t, system, got, "system failures stay plain errors so upstream retries prepare")
				return
			}
			var be *common.BuildError
			require.ErrorAs(t, got, &be)
			assert.Equal(t, tt.reason, be.FailureReason)
			assert.Equal(t, tt.exitCode, be.ExitCode)
			assert.ErrorIs(t, got, tt.err)
		})
	}
	assert.NoError(t, buildError(nil))
}

func TestCleanupWithoutPrepareIsHarmless(t *testing.T) {
	e := NewProvider().Create()
	e.Cleanup()
	e.Cleanup()
	assert.Equal(t, common.ExecutorStageCleanup, e.GetCurrentStage())
}

func TestAcquireWithoutConfigDirLetsTheJobFailVisibly(t *testing.T) {
	t.Setenv(SettingsEnv, "")
	data, err := NewProvider().Acquire(&common.RunnerConfig{Name: "r"})
	assert.NoError(t, err)
	assert.Nil(t, data)
}
