package main

import (
	"context"
	"encoding/json"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version"
)

// configOutput is the JSON gitlab-runner reads from config_exec's stdout
// (executors/custom/api.ConfigExecOutput); unknown keys are ignored there.
type configOutput struct {
	BuildsDir         string       `json:"builds_dir"`
	CacheDir          string       `json:"cache_dir"`
	BuildsDirIsShared bool         `json:"builds_dir_is_shared"`
	Hostname          string       `json:"hostname"`
	Driver            configDriver `json:"driver"`
	Shell             string       `json:"shell"`
}

type configDriver struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// configStage tells gitlab-runner where builds and caches live inside the VM,
// which shell to generate scripts for, and the VM's name, which is known
// before the VM exists because it derives from the job.
func configStage(ctx context.Context, a *app, args []string) error {
	s, j, err := a.stage("config", args)
	if err != nil {
		return err
	}
	return json.NewEncoder(a.stdout).Encode(configOutput{
		BuildsDir:         s.BuildsDir,
		CacheDir:          s.CacheDir,
		BuildsDirIsShared: false,
		Hostname:          jobvm.JobVMName(s.NamePrefix, s.RunnerName, j.ID, j.Slot),
		Driver:            configDriver{Name: "bhyve-executor", Version: version.Version},
		Shell:             s.Shell,
	})
}
