package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
)

const (
	envConfig = "BHYVE_EXECUTOR_CONFIG"
	envRunner = "BHYVE_EXECUTOR_RUNNER"
)

// defaultConfigPaths are where the FreeBSD package and a hand install keep
// gitlab-runner's config.toml; bhyve.toml sits next to it.
var defaultConfigPaths = []string{
	"/usr/local/etc/gitlab-runner/bhyve.toml",
	"/etc/gitlab-runner/bhyve.toml",
}

// app is what every command shares: where its output goes, its environment
// and the settings it was pointed at.
type app struct {
	stdout, stderr io.Writer
	env            func(string) string
	configPath     string
	runner         string
}

// parseGlobal takes --config and --runner from the front of args, in the
// forms --config PATH, --config=PATH, -c PATH and likewise -r for --runner.
func (a *app) parseGlobal(args []string) ([]string, error) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
		var target *string
		switch name {
		case "config", "c":
			target = &a.configPath
		case "runner", "r":
			target = &a.runner
		case "help", "h":
			return nil, nil
		default:
			return nil, fmt.Errorf("unknown flag %s", args[0])
		}
		if !hasValue {
			if len(args) < 2 {
				return nil, fmt.Errorf("flag %s needs a value", args[0])
			}
			value, args = args[1], args[1:]
		}
		*target = value
		args = args[1:]
	}
	return args, nil
}

// settings reads bhyve.toml afresh; every stage is a new process anyway.
func (a *app) settings() (*settings.Settings, error) {
	path := a.configPath
	if path == "" {
		path = a.env(envConfig)
	}
	if path == "" {
		for _, p := range defaultConfigPaths {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		return nil, failure.Configf("no settings file: pass --config PATH or set %s (looked for %s)", envConfig, strings.Join(defaultConfigPaths, ", "))
	}
	runner := a.runner
	if runner == "" {
		runner = a.env(envRunner)
	}
	return settings.Load(path, runner)
}

// request is the CI job a stage belongs to, as gitlab-runner's Custom
// executor describes it in CUSTOM_ENV_*: the job's identity and its image:
// (the Custom path's counterpart of supervisor.Request).
type request struct {
	jobvm.Job
	Image string
}

func (a *app) request() (request, error) {
	var j request
	idText := a.env("CUSTOM_ENV_CI_JOB_ID")
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 {
		return j, fmt.Errorf("CUSTOM_ENV_CI_JOB_ID is %q, want a positive job ID: bhyve-executor stages must be run by gitlab-runner's Custom executor", idText)
	}
	j.ID = id
	// CI_CONCURRENT_ID is the job's slot on this runner; older runners may
	// not pass it, and slot 0 is then as good as any.
	if s := a.env("CUSTOM_ENV_CI_CONCURRENT_ID"); s != "" {
		slot, err := strconv.Atoi(s)
		if err != nil || slot < 0 {
			return j, fmt.Errorf("CUSTOM_ENV_CI_CONCURRENT_ID is %q, want a number", s)
		}
		j.Slot = slot
	}
	j.Image = a.env("CUSTOM_ENV_CI_JOB_IMAGE")
	return j, nil
}

// stage is the common start of a stage that takes no arguments: the
// runner's settings and the job gitlab-runner is running.
func (a *app) stage(name string, args []string) (*settings.Settings, request, error) {
	if len(args) != 0 {
		return nil, request{}, usagef("%s takes no arguments", name)
	}
	s, err := a.settings()
	if err != nil {
		return nil, request{}, err
	}
	j, err := a.request()
	return s, j, err
}

// host is the view of the bhyve host shared by this process's work. In the
// Custom executor the process that holds a job's VM is gitlab-runner, our
// parent: the VM stays held between stages, and becomes an orphan when
// gitlab-runner goes away.
func (a *app) host() (*jobvm.Host, error) {
	h, err := jobvm.NewHost(os.Getppid(), false)
	if err != nil {
		return nil, err
	}
	h.Logf = func(format string, args ...any) { fmt.Fprintf(a.stderr, format+"\n", args...) }
	return h, nil
}

// preparedVM is what prepare leaves for the later stages of the same job, in
// the job's private temporary directory (gitlab-runner's TMPDIR for the job).
type preparedVM struct {
	VM       string `json:"vm"`
	Template string `json:"template"`
	Address  string `json:"address"`
	MAC      string `json:"mac"`
}

const stateFile = "bhyve-executor-state.json"

func (a *app) statePath() (string, error) {
	dir := a.env("TMPDIR")
	if dir == "" {
		return "", errors.New("TMPDIR is not set: bhyve-executor stages must be run by gitlab-runner's Custom executor, which gives each job its own TMPDIR")
	}
	return filepath.Join(dir, stateFile), nil
}

func (a *app) saveState(st preparedVM) error {
	path, err := a.statePath()
	if err != nil {
		return err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("save job state: %w", err)
	}
	return os.Rename(tmp, path)
}

// loadState returns fs.ErrNotExist (wrapped) when prepare never got as far
// as saving it.
func (a *app) loadState() (preparedVM, error) {
	var st preparedVM
	path, err := a.statePath()
	if err != nil {
		return st, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return st, fmt.Errorf("no job state in %s (did prepare succeed?): %w", path, err)
		}
		return st, fmt.Errorf("read job state: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("job state %s is corrupt: %w", path, err)
	}
	return st, nil
}
