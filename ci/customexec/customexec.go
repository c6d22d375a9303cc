// Package customexec plays gitlab-runner's side of the Custom executor
// protocol, the way upstream's executors/custom implements it, so that the
// real bhyve-executor binary can be driven through whole jobs without a
// GitLab instance: by the protocol tests and by `make demo`.
//
// What is reproduced (upstream executors/custom, helpers/process):
//   - a private temporary directory per job that is the working directory and
//     TMPDIR of every stage, holding response.json and the generated scripts;
//   - the environment: the runner's own, then TMPDIR, BUILD_FAILURE_EXIT_CODE=1,
//     SYSTEM_FAILURE_EXIT_CODE=2, BUILD_EXIT_CODE_FILE, JOB_RESPONSE_FILE, then
//     CUSTOM_ENV_<KEY> for every job variable;
//   - config_exec's stdout parsed as JSON; prepare_exec retried up to three
//     times, with cleanup_exec after each failed attempt, unless it failed
//     with a build failure;
//   - run_exec <args> <script path> <stage> per stage, the script in
//     TMPDIR/scriptNNN/script, mode 0700;
//   - exit code 1 = build failure with the code from the first line of
//     BUILD_EXIT_CODE_FILE, 2 = system failure, anything else = unknown
//     failure;
//   - every stage in its own process group; on cancel SIGTERM to the group,
//     SIGKILL after graceful_kill_timeout, give up after force_kill_timeout;
//   - cleanup_exec on its own context after everything, never failing the job.
package customexec

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Runner is the [runners.custom] section of config.toml, plus how to start
// the executable.
type Runner struct {
	ConfigExec  []string // argv, e.g. {"bhyve-executor", "config"}
	PrepareExec []string
	RunExec     []string
	CleanupExec []string

	// Wrap is prepended to every argv; the tests run the driver inside the
	// simulated host's network namespace with `ip netns exec NS`, which
	// execs in place, so signals still reach the driver itself.
	Wrap []string
	// Env is the runner's environment (default os.Environ()).
	Env []string

	GracefulKillTimeout time.Duration // default 10m, as upstream
	ForceKillTimeout    time.Duration // default 10s, as upstream
	CleanupTimeout      time.Duration // default 1h, as upstream
	PrepareRetryDelay   time.Duration // default 3s, as upstream
}

// When says whether a stage runs after an earlier stage failed.
type When int

const (
	OnSuccess When = iota // e.g. step_script, upload_artifacts_on_success
	Always                // after_script, cleanup_file_variables
	OnFailure             // upload_artifacts_on_failure
)

// Stage is one script gitlab-runner would generate.
type Stage struct {
	Name   string
	Script string
	When   When
}

// Job is what GitLab would send.
type Job struct {
	ID        int64
	Image     string
	Variables map[string]string
	Stages    []Stage
}

// Failure mirrors upstream's failure reasons.
type Failure string

const (
	NoFailure     Failure = ""
	ScriptFailure Failure = "script_failure"
	SystemFailure Failure = "runner_system_failure"
	UnknownFail   Failure = "unknown_failure"
	Cancelled     Failure = "canceled"
)

// Result is how the job ended.
type Result struct {
	Config   map[string]any
	Failure  Failure
	ExitCode int      // the script's exit code for a script failure
	Ran      []string // stages run, in order, with how each ended
	Prepares int      // prepare attempts
	Cleanup  string   // cleanup_exec's output (the runner log, not the job log)
	Phases   []Phase  // how long each protocol step took
}

// Phase is the duration of one executable run.
type Phase struct {
	Name string
	Took time.Duration
}

// Run drives one job through the protocol, writing the job log to log.
// Cancelling ctx cancels the job the way the GitLab UI's cancel does.
func (r *Runner) Run(ctx context.Context, job Job, log io.Writer) (res Result, _ error) {
	tmp, err := os.MkdirTemp("", "custom-executor")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)

	payload, err := json.Marshal(map[string]any{"id": job.ID, "image": map[string]string{"name": job.Image}})
	if err != nil {
		return res, err
	}
	respFile := filepath.Join(tmp, "response.json")
	if err := os.WriteFile(respFile, payload, 0o600); err != nil {
		return res, err
	}
	env := r.env(tmp, respFile, job)

	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), or(r.CleanupTimeout, time.Hour))
		defer cancel()
		var out bytes.Buffer
		start := time.Now()
		_, _ = r.exec(cctx, "cleanup", r.CleanupExec, nil, tmp, env, &out, &out)
		res.Phases = append(res.Phases, Phase{"cleanup", time.Since(start)})
		res.Cleanup = out.String()
	}()

	// config_exec: stdout is JSON; stderr goes to the job log.
	var cfgOut bytes.Buffer
	start := time.Now()
	if st, err := r.exec(ctx, "config", r.ConfigExec, nil, tmp, env, &cfgOut, log); err != nil || st.failure != NoFailure {
		res.Failure = orFailure(st.failure, SystemFailure)
		return res, err
	}
	res.Phases = append(res.Phases, Phase{"config", time.Since(start)})
	if err := json.Unmarshal(cfgOut.Bytes(), &res.Config); err != nil {
		res.Failure = SystemFailure
		return res, fmt.Errorf("config_exec printed invalid JSON %q: %w", cfgOut.String(), err)
	}

	// prepare_exec, retried like upstream's retryCreateExecutor.
	for attempt := 1; ; attempt++ {
		res.Prepares = attempt
		start := time.Now()
		st, err := r.exec(ctx, "prepare", r.PrepareExec, nil, tmp, env, log, log)
		res.Phases = append(res.Phases, Phase{"prepare", time.Since(start)})
		if err != nil {
			return res, err
		}
		if st.failure == NoFailure {
			break
		}
		if st.failure == ScriptFailure || st.failure == Cancelled || attempt == 3 || ctx.Err() != nil {
			res.Failure, res.ExitCode = st.failure, st.exitCode
			return res, nil
		}
		var out bytes.Buffer
		_, _ = r.exec(context.WithoutCancel(ctx), "cleanup", r.CleanupExec, nil, tmp, env, &out, &out)
		fmt.Fprintf(log, "WARNING: Preparation failed: exit status %d\nWill be retried in 3s ...\n", st.rawExit)
		select {
		case <-time.After(or(r.PrepareRetryDelay, 3*time.Second)):
		case <-ctx.Done():
		}
	}

	failed := false
	for i, stage := range job.Stages {
		if failed && stage.When == OnSuccess || !failed && stage.When == OnFailure {
			continue
		}
		dir := filepath.Join(tmp, fmt.Sprintf("script%03d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return res, err
		}
		script := filepath.Join(dir, "script")
		if err := os.WriteFile(script, []byte(stage.Script), 0o700); err != nil {
			return res, err
		}
		start := time.Now()
		st, err := r.exec(ctx, stage.Name, r.RunExec, []string{script, stage.Name}, tmp, env, log, log)
		res.Phases = append(res.Phases, Phase{stage.Name, time.Since(start)})
		if err != nil {
			return res, err
		}
		res.Ran = append(res.Ran, stage.Name+":"+string(orFailure(st.failure, "ok")))
		if st.failure != NoFailure && !failed {
			failed = true
			res.Failure, res.ExitCode = st.failure, st.exitCode
		}
		if st.failure == Cancelled || st.failure == SystemFailure {
			break
		}
	}
	return res, nil
}

func (r *Runner) env(tmp, respFile string, job Job) []string {
	env := r.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(append([]string(nil), env...),
		"TMPDIR="+tmp,
		"BUILD_FAILURE_EXIT_CODE=1",
		"SYSTEM_FAILURE_EXIT_CODE=2",
		"BUILD_EXIT_CODE_FILE="+filepath.Join(tmp, "build_exit_code"),
		"JOB_RESPONSE_FILE="+respFile,
	)
	vars := map[string]string{
		"CI_JOB_ID":        strconv.FormatInt(job.ID, 10),
		"CI_JOB_IMAGE":     job.Image,
		"CI_CONCURRENT_ID": "0",
		"CI_JOB_STAGE":     "test",
	}
	for k, v := range job.Variables {
		vars[k] = v
	}
	for k, v := range vars {
		env = append(env, "CUSTOM_ENV_"+k+"="+v)
	}
	env = append(env, "CUSTOM_ENV_CI_JOB_SERVICES=[]")
	return env
}

type status struct {
	failure  Failure
	exitCode int
	rawExit  int
}

// exec runs one executable as upstream's command.Run does.
func (r *Runner) exec(ctx context.Context, stage string, argv, extra []string, dir string, env []string, stdout, stderr io.Writer) (status, error) {
	if len(argv) == 0 {
		return status{}, nil // an optional *_exec that is not configured
	}
	full := append(append(append([]string(nil), r.Wrap...), argv...), extra...)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return status{}, fmt.Errorf("%s: start %v: %w", stage, full, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		pgid := -cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case err = <-waited:
		case <-time.After(or(r.GracefulKillTimeout, 10*time.Minute)):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			select {
			case err = <-waited:
			case <-time.After(or(r.ForceKillTimeout, 10*time.Second)):
				return status{failure: Cancelled}, fmt.Errorf("%s: process %d did not die", stage, cmd.Process.Pid)
			}
		}
		return status{failure: Cancelled}, nil
	}
	return classify(err, filepath.Join(dir, "build_exit_code")), nil
}

// classify maps an exit like upstream's command.waitForCommand.
func classify(err error, codeFile string) status {
	if err == nil {
		return status{}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return status{failure: SystemFailure}
	}
	code := ee.ExitCode()
	switch code {
	case 1:
		f, err := os.Open(codeFile)
		if err != nil {
			return status{failure: ScriptFailure, exitCode: 1, rawExit: code}
		}
		defer f.Close()
		line, _ := bufio.NewReader(f).ReadString('\n')
		n, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			return status{failure: UnknownFail, rawExit: code}
		}
		return status{failure: ScriptFailure, exitCode: n, rawExit: code}
	case 2:
		return status{failure: SystemFailure, rawExit: code}
	default:
		return status{failure: UnknownFail, rawExit: code}
	}
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orFailure(f, def Failure) Failure {
	if f != NoFailure {
		return f
	}
	return def
}
