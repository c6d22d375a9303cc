package bhyve

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/sirupsen/logrus"

	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
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
	p := &provider{}
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

type provider struct {
	executors.DefaultExecutorProvider

	once    sync.Once
	host    *jobvm.Host
	hostErr error

	swept sync.Map // runner name -> struct{}: sweep once per runner per process
}

// jobHost is created on first use, never at construction (see NewProvider).
// The native executor's VMs are held by this very process.
func (p *provider) jobHost() (*jobvm.Host, error) {
	p.once.Do(func() {
		p.host, p.hostErr = jobvm.NewHost(os.Getpid(), true)
		if p.host != nil {
			p.host.Logf = logrus.WithField("executor", ExecutorName).Debugf
		}
	})
	return p.host, p.hostErr
}

// settingsFor re-reads the runner's bhyve.toml; operators may edit it while
// the runner runs, as they may edit config.toml.
func settingsFor(config *common.RunnerConfig) (*settings.Settings, error) {
	path := os.Getenv(SettingsEnv)
	if path == "" {
		if config.ConfigDir == "" {
			return nil, fmt.Errorf("cannot locate bhyve.toml: this command has no config directory; set %s to its path", SettingsEnv)
		}
		path = settings.DefaultPath(config.ConfigDir)
	}
	return settings.Load(path, config.Name)
}

// Acquire runs before every job request. The first time it sees a runner,
// it sweeps that runner's orphaned VMs (left by a runner that was killed or a
// host that crashed) in the background, so a restart cleans up after itself.
func (p *provider) Acquire(config *common.RunnerConfig) (common.ExecutorData, error) {
	if _, done := p.swept.LoadOrStore(config.Name, struct{}{}); !done {
		go p.sweep(config)
	}
	return nil, nil
}

func (p *provider) sweep(config *common.RunnerConfig) {
	log := logrus.WithFields(logrus.Fields{"executor": ExecutorName, "runner": config.ShortDescription()})
	s, err := settingsFor(config)
	if err != nil {
		log.WithError(err).Warningln("bhyve: not sweeping orphaned VMs")
		return
	}
	host, err := p.jobHost()
	if err != nil {
		log.WithError(err).Warningln("bhyve: not sweeping orphaned VMs")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sweepTimeout)
	defer cancel()
	found, err := host.Manager(s, "", "").Sweep(ctx, false)
	for _, f := range found {
		if f.Verdict == jobvm.Orphan {
			log.WithField("vm", f.Name).WithError(f.Err).Infoln("bhyve: swept orphaned VM")
		}
	}
	if err != nil {
		log.WithError(err).Warningln("bhyve: sweeping orphaned VMs")
	}
}
