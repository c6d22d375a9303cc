// Package bhyve adapts the runner-agnostic core (helpers/supervisor and
// helpers/jobvm) to upstream GitLab Runner's executor API. It holds no
// behaviour of its own: it maps upstream calls onto the core and core
// failures onto upstream's BuildError reasons.
package bhyve

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/common/buildlogger"
	"gitlab.com/gitlab-org/gitlab-runner/executors"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/supervisor"
)

// cleanupTimeout bounds Cleanup, which runs on its own background context:
// the job's context may already be cancelled, and the VM must go anyway.
const cleanupTimeout = 5 * time.Minute

type executor struct {
	executors.AbstractExecutor
	provider *provider
	job      *supervisor.Assignment
	jobErr   error // what Finish was told
	// mask hides the job's masked variables in what this executor writes
	// (nil before Prepare knows the job).
	mask *strings.Replacer
}

func (e *executor) Prepare(options common.ExecutorPrepareOptions) error {
	r, err := runner(options.Config)
	if err != nil {
		return buildError(failure.Configf("%w", err))
	}
	s, err := r.Settings()
	if err != nil {
		return buildError(err)
	}
	e.DefaultBuildsDir, e.DefaultCacheDir = s.BuildsDir, s.CacheDir
	e.ExecutorOptions.Shell.Shell = s.Shell

	if err := e.AbstractExecutor.Prepare(options); err != nil {
		return err
	}
	e.mask = masker(e.Build.GetAllVariables().Masked())
	if s.SSH.InsecureSkipHostKeyCheck {
		e.BuildLogger.Warningln("bhyve: ssh.insecure_skip_host_key_check is set: the VM's identity is not verified")
	}

	// Job variables, expanded like image: (BHYVE_MEMORY: $BIG_VM works).
	vars := e.Build.GetAllVariables()
	res, err := jobvm.ParseResources(func(name string) string { return e.ExpandValue(vars.Value(name)) })
	if err != nil {
		e.BuildLogger.Errorln(err.Error())
		return buildError(err)
	}

	claim, _ := options.Build.ExecutorData.(*supervisor.Claim)
	e.job, err = e.provider.supervisor.Prepare(options.Context, claim, r, supervisor.Request{
		Job:       jobvm.Job{ID: e.Build.ID, Slot: e.Build.RunnerID},
		Image:     e.ExpandValue(e.Build.Image.Name),
		Shell:     e.BuildShell.CmdLine,
		Resources: res,
		Observer:  stages{e},
	}, e.logf)
	if err != nil {
		err = e.masked(err)
		if failure.KindOf(err) == failure.Config {
			e.BuildLogger.Errorln(err.Error())
		}
		return buildError(err)
	}
	e.Build.Hostname = e.job.VM.Name
	return nil
}

func (e *executor) logf(format string, args ...any) {
	e.BuildLogger.Println(e.maskString(fmt.Sprintf(format, args...)))
}

// maskedText is what upstream puts in the trace for a masked value.
const maskedText = "[MASKED]"

// masker replaces each of values with maskedText, longest first so that a
// value containing another is hidden whole. Upstream masks only the trace:
// BuildLogger also copies every line to the runner's own log (Println at
// debug level, Errorln always), and upstream logs a failed job's error
// there too, unmasked. What this executor writes can carry an expanded
// image: name, so it masks before writing.
func masker(values []string) *strings.Replacer {
	values = slices.DeleteFunc(slices.Clone(values), func(v string) bool { return v == "" })
	slices.SortFunc(values, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	pairs := make([]string, 0, 2*len(values))
	for _, v := range values {
		pairs = append(pairs, v, maskedText)
	}
	return strings.NewReplacer(pairs...)
}

func (e *executor) maskString(s string) string {
	if e.mask == nil {
		return s
	}
	return e.mask.Replace(s)
}

// masked is err with the job's masked values hidden in its message; its
// kind and chain are err's.
func (e *executor) masked(err error) error {
	if msg := e.maskString(err.Error()); msg != err.Error() {
		return &maskedError{err: err, msg: msg}
	}
	return err
}

type maskedError struct {
	err error
	msg string
}

func (m *maskedError) Error() string { return m.msg }
func (m *maskedError) Unwrap() error { return m.err }

// Run runs one stage over the job's SSH connection, on the stage's own
// context (never the prepare context, which ends with prepare_timeout).
func (e *executor) Run(cmd common.ExecutorCommand) error {
	if e.job == nil {
		return fmt.Errorf("bhyve: no VM prepared for stage %s", cmd.Stage)
	}
	stdout := e.BuildLogger.Stream(buildlogger.StreamWorkLevel, buildlogger.Stdout)
	defer stdout.Close()
	stderr := e.BuildLogger.Stream(buildlogger.StreamWorkLevel, buildlogger.Stderr)
	defer stderr.Close()

	return buildError(e.job.Run(cmd.Context, strings.NewReader(cmd.Script), stdout, stderr))
}

// Finish records the job's outcome: a warm VM whose job failed is not put
// back into the pool even when max_use_count would allow it.
func (e *executor) Finish(err error) {
	e.jobErr = err
	e.AbstractExecutor.Finish(err)
}

// Cleanup returns the VM to the pool, or powers it off and leaves its
// destroy to the provider in the background: upstream reports the job's
// status only after Cleanup returns (common/build.go defers it inside
// Build.Run). Upstream calls it after every Prepare, failed or not, and may
// call it more than once.
func (e *executor) Cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := e.job.Finish(ctx, e.jobErr); err != nil {
		e.BuildLogger.Warningln("bhyve: destroying the job VM:", err.Error())
	}
	e.job = nil
	e.AbstractExecutor.Cleanup()
}

// buildError is the one place core failures become upstream failure reasons.
// System failures stay plain errors: upstream reports them as
// runner_system_failure and retries a failed prepare, which is what a
// transient boot problem deserves.
func buildError(err error) error {
	if err == nil {
		return nil
	}
	switch failure.KindOf(err) {
	case failure.Script:
		return &common.BuildError{Inner: err, FailureReason: common.ScriptFailure, ExitCode: common.NormalizeExitCode(failure.ExitCode(err))}
	case failure.Config:
		return &common.BuildError{Inner: err, FailureReason: common.ConfigurationError}
	case failure.Permanent:
		// Still the host's fault, but a *BuildError ends upstream's prepare
		// retries (retryCreateExecutor), which could only fail the same way.
		return &common.BuildError{Inner: err, FailureReason: common.RunnerSystemFailure}
	default:
		return err
	}
}

// stages shows the VM's phases as executor stages (bhyve_clone, bhyve_boot,
// bhyve_address, bhyve_ssh, bhyve_destroy), so upstream's job metrics say
// where a slow prepare spent its time.
type stages struct{ e *executor }

func (s stages) PhaseStarted(_ string, p jobvm.Phase) {
	s.e.SetCurrentStage(common.ExecutorStage("bhyve_" + string(p)))
}

func (s stages) PhaseDone(string, jobvm.Phase, time.Duration, error) {}
