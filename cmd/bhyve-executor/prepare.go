package main

import (
	"context"
	"fmt"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// prepareStage brings the job's VM up and leaves it running, with what later
// stages need to reach it saved in the job's TMPDIR. If anything fails,
// including a SIGTERM from gitlab-runner, the VM is destroyed before exit.
func prepareStage(ctx context.Context, a *app, args []string) error {
	s, j, err := a.stage("prepare", args)
	if err != nil {
		return err
	}
	template, warning, err := s.SelectTemplate(j.Image)
	if err != nil {
		return err
	}
	if warning != "" {
		fmt.Fprintln(a.stdout, warning)
	}
	h, err := a.host()
	if err != nil {
		return err
	}
	if s.SSH.InsecureSkipHostKeyCheck {
		fmt.Fprintln(a.stdout, "WARNING: ssh.insecure_skip_host_key_check is set: the VM's identity is not verified")
	}

	// The job's BHYVE_CPUS and BHYVE_MEMORY, read here only: a bad value
	// fails the prepare, not the cleanup of a VM that never was.
	res, err := jobvm.ParseResources(func(name string) string { return a.env("CUSTOM_ENV_" + name) })
	if err != nil {
		return err
	}
	// Admission does not wait (AdmissionWait 0): the Custom executor has no
	// Acquire to hold back job requests, so a full host fails the prepare at
	// once, gitlab-runner retries it (3 attempts), and the job's log says why.
	m := h.Manager(s, template, "")
	m.Config.Resources = res
	logf := func(format string, args ...any) { fmt.Fprintf(a.stdout, format+"\n", args...) }
	vm, err := m.Create(ctx, j.Job, logf)
	if err != nil {
		return err
	}

	st := preparedVM{VM: vm.Name, Template: vm.Template, Address: vm.Address.IP.String(), MAC: vm.MAC.String()}
	if err := a.saveState(st); err != nil {
		// Later stages could not find the VM: better no VM than a lost one.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.StopTimeout+cleanupSlack)
		defer cancel()
		if derr := vm.Close(dctx); derr != nil {
			return fmt.Errorf("%w (and destroying %s failed: %v)", err, vm.Name, derr)
		}
		return err
	}
	return vm.Detach()
}
