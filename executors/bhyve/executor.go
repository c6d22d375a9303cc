// Package bhyve adapts the runner-agnostic job-VM core (helpers/jobvm) to
// upstream GitLab Runner's executor API. It holds no behaviour of its own: it
// maps upstream calls onto the core and core failures onto upstream's
// BuildError reasons.
package bhyve

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/common/buildlogger"
	"gitlab.com/gitlab-org/gitlab-runner/executors"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

const (
	// cleanupTimeout bounds Cleanup, which runs on its own background
	// context: the job's context may already be cancelled, and the VM must
	// go anyway.
	cleanupTimeout = 5 * time.Minute
	sweepTimeout   = 10 * time.Minute
)

type executor struct {
	executors.AbstractExecutor
	provider *provider
	vm       *jobvm.VM
}

func (e *executor) Prepare(options common.ExecutorPrepareOptions) error {
	s, err := settingsFor(options.Config)
	if err != nil {
		return buildError(err)
	}
	e.DefaultBuildsDir, e.DefaultCacheDir = s.BuildsDir, s.CacheDir
	e.ExecutorOptions.Shell.Shell = s.Shell

	if err := e.AbstractExecutor.Prepare(options); err != nil {
		return err
	}

	template, err := s.SelectTemplate(e.ExpandValue(e.Build.Image.Name))
	if err != nil {
		e.BuildLogger.Errorln(err.Error())
		return buildError(err)
	}
	host, err := e.provider.jobHost()
	if err != nil {
		return err
	}
	m := host.Manager(s, template, e.BuildShell.CmdLine)
	m.Observer = stages{e: e, next: m.Observer}

	e.vm, err = m.Create(options.Context, jobvm.Job{ID: e.Build.ID, Slot: e.Build.RunnerID}, e.logf)
	if err != nil {
		return buildError(err)
	}
	e.Build.Hostname = e.vm.Name
	return nil
}

func (e *executor) logf(format string, args ...any) {
	e.BuildLogger.Println(fmt.Sprintf(format, args...))
}

// Run runs one stage over the job's SSH connection, on the stage's own
// context (never the prepare context, which ends with prepare_timeout).
func (e *executor) Run(cmd common.ExecutorCommand) error {
	if e.vm == nil {
		return fmt.Errorf("bhyve: no VM prepared for stage %s", cmd.Stage)
	}
	stdout := e.BuildLogger.Stream(buildlogger.StreamWorkLevel, buildlogger.Stdout)
	defer stdout.Close()
	stderr := e.BuildLogger.Stream(buildlogger.StreamWorkLevel, buildlogger.Stderr)
	defer stderr.Close()

	return buildError(e.vm.Run(cmd.Context, strings.NewReader(cmd.Script), stdout, stderr))
}

// Cleanup destroys the VM. Upstream calls it after every Prepare, failed or
// not, and may call it more than once; jobvm.VM.Close is idempotent.
func (e *executor) Cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := e.vm.Close(ctx); err != nil {
		e.BuildLogger.Warningln("bhyve: destroying the job VM:", err.Error())
	}
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
	default:
		return err
	}
}

// stages shows the VM's phases as executor stages (bhyve_clone, bhyve_boot,
// bhyve_address, bhyve_ssh, bhyve_destroy), so upstream's job metrics say
// where a slow prepare spent its time.
type stages struct {
	e    *executor
	next jobvm.Observer
}

func (s stages) PhaseStarted(vm string, p jobvm.Phase) {
	s.e.SetCurrentStage(common.ExecutorStage("bhyve_" + string(p)))
	if s.next != nil {
		s.next.PhaseStarted(vm, p)
	}
}

func (s stages) PhaseDone(vm string, p jobvm.Phase, took time.Duration, err error) {
	if s.next != nil {
		s.next.PhaseDone(vm, p, took, err)
	}
}
