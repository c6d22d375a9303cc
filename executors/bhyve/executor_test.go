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
// The behaviour behind the adapter is tested in helpers/supervisor and
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

// Upstream masks the trace only; the executor's own lines and errors also
// reach the runner's log, so it masks them itself.
func TestMaskingHidesMaskedValuesAndKeepsTheErrorKind(t *testing.T) {
	e := &executor{mask: masker([]string{"s3cr3t", "", "s3cr3t-longer"})}
	assert.Equal(t, `image "[MASKED]" and [MASKED] are ignored`, e.maskString(`image "s3cr3t-longer" and s3cr3t are ignored`),
		"a value containing another is hidden whole")
	assert.Equal(t, "nothing to hide", e.maskString("nothing to hide"))

	orig := failure.Configf(`bhyve.toml: image "s3cr3t" is not allowed`)
	err := e.masked(orig)
	assert.Equal(t, `bhyve.toml: image "[MASKED]" is not allowed`, err.Error())
	assert.Equal(t, failure.Config, failure.KindOf(err), "the kind decides the failure reason")
	assert.ErrorIs(t, err, orig)
	var be *common.BuildError
	require.ErrorAs(t, buildError(err), &be)
	assert.Equal(t, common.ConfigurationError, be.FailureReason)
	assert.NotContains(t, be.Error(), "s3cr3t", "upstream logs a failed job's error in the runner's log")

	clean := errors.New("no secret here")
	assert.Same(t, clean, e.masked(clean))
	assert.Equal(t, "s3cr3t", (&executor{}).maskString("s3cr3t"), "before Prepare there is nothing to mask")
}
