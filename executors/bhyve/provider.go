package bhyve

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/supervisor"
)

// ExecutorName is the value of `executor` in config.toml.
const ExecutorName = "bhyve"

// SettingsEnv overrides where bhyve.toml is read from; by default it sits
// next to config.toml (run-single has no config directory, so it needs this).
const SettingsEnv = "BHYVE_EXECUTOR_CONFIG"

// NewProvider returns the bhyve provider. It must not touch the host: upstream
// constructs and validates every provider at every process start, including
// the artifact and cache helper commands that run inside job VMs.
func NewProvider() common.ExecutorProvider {
	p := &provider{supervisor: supervisor.New()}
	p.supervisor.Logf = logrus.WithField("executor", ExecutorName).Infof
	p.DefaultExecutorProvider = executors.DefaultExecutorProvider{
		Creator: func() common.Executor {
			return &executor{
				AbstractExecutor: executors.AbstractExecutor{ExecutorOptions: executorOptions},
				provider:         p,
			}
		},
		FeaturesUpdater:  func(f *common.FeaturesInfo) { f.Variables = true },
		DefaultShellName: "bash",
	}
	return p
}

// executorOptions are upstream's per-executor defaults. The builds and cache
// directories are replaced per job by the runner's bhyve.toml; the hostname
// is the VM's name, not the runner host's.
var executorOptions = executors.ExecutorOptions{
	DefaultCustomBuildsDirEnabled: false,
	DefaultSafeDirectoryCheckout:  true,
	DefaultBuildsDir:              "/builds",
	DefaultCacheDir:               "/cache",
	SharedBuildsDir:               false,
	Shell: common.ShellScriptInfo{
		Shell:         "bash",
		Type:          common.LoginShell,
		RunnerCommand: "gitlab-runner",
	},
	ShowHostname: false,
}

// provider adds the pool, sweeps and metrics of helpers/supervisor to
// upstream's default provider. It implements common.ManagedExecutorProvider
// (Shutdown drains the pools) and prometheus.Collector (upstream serves only
// provider collectors).
type provider struct {
	executors.DefaultExecutorProvider
	supervisor *supervisor.Supervisor
}

var (
	_ common.ManagedExecutorProvider = (*provider)(nil)
	_ prometheus.Collector           = (*provider)(nil)
)

// runner translates upstream's runner config. Settings are re-read per job
// and per pool pass; operators may edit bhyve.toml while the runner runs.
func runner(config *common.RunnerConfig) (supervisor.Runner, error) {
	path := os.Getenv(SettingsEnv)
	if path == "" {
		if config.ConfigDir == "" {
			return supervisor.Runner{}, fmt.Errorf("cannot locate bhyve.toml: this command has no config directory; set %s to its path", SettingsEnv)
		}
		path = settings.DefaultPath(config.ConfigDir)
	}
	return supervisor.Runner{Name: config.Name, SettingsPath: path, Limit: config.Limit}, nil
}

// Acquire runs before every job request. It claims a warm VM (or leave to
// boot one) and says "no free executor" when the runner's VMs are all busy
// at its limit, or when a VM of the template's size would leave less than
// memory_reserve free on the host. The first call for a runner also sweeps its orphans.
func (p *provider) Acquire(config *common.RunnerConfig) (common.ExecutorData, error) {
	r, err := runner(config)
	if err != nil {
		// Let the job come and fail visibly with the reason.
		return nil, nil
	}
	claim, err := p.supervisor.Acquire(r)
	if errors.Is(err, supervisor.ErrExhausted) || errors.Is(err, supervisor.ErrNoMemory) {
		return nil, &common.NoFreeExecutorError{Message: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	return claim, nil
}

// Release returns what Acquire claimed, after the job or when none came.
func (p *provider) Release(_ *common.RunnerConfig, data common.ExecutorData) {
	if claim, ok := data.(*supervisor.Claim); ok {
		p.supervisor.Release(claim)
	}
}

// Init has nothing to do: pools start on a runner's first Acquire, because
// only then is its configuration known.
func (p *provider) Init() {}

// Shutdown destroys idle pool VMs and cancels pool boots.
func (p *provider) Shutdown(ctx context.Context, _ *common.Config) {
	if err := p.supervisor.Shutdown(ctx); err != nil {
		logrus.WithField("executor", ExecutorName).WithError(err).Warningln("bhyve: draining the warm pools")
	}
}

func (p *provider) Describe(ch chan<- *prometheus.Desc) { p.supervisor.Collector().Describe(ch) }
func (p *provider) Collect(ch chan<- prometheus.Metric) { p.supervisor.Collector().Collect(ch) }
