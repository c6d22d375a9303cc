package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// cleanupSlack is the time a destroy gets on top of the ACPI stop grace.
const cleanupSlack = 2 * time.Minute

// cleanupStage destroys the job's VM, whatever state prepare left it in, and
// sweeps this runner's orphans while it is at it. Its output goes to the
// runner's log, not the job's.
//
// A SIGTERM does not interrupt the destroy: cleaning up is the one thing this
// stage is for, and gitlab-runner's SIGKILL still bounds it.
func cleanupStage(ctx context.Context, a *app, args []string) error {
	if len(args) != 0 {
		return usagef("cleanup takes no arguments")
	}
	s, err := a.settings()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.StopTimeout+cleanupSlack)
	defer cancel()

	// The state names the VM; without it (prepare failed or was killed
	// before saving it) the name follows from the job, as it did in prepare.
	name := ""
	st, stErr := a.loadState()
	switch {
	case stErr == nil:
		name = st.VM
	case errors.Is(stErr, fs.ErrNotExist):
		j, err := a.request()
		if err != nil {
			return err
		}
		name = jobvm.JobVMName(s.NamePrefix, s.RunnerName, j.ID, j.Slot)
	default:
		return stErr
	}

	h, err := a.host()
	if err != nil {
		return err
	}
	m := h.Manager(s, "", "")
	start := time.Now()
	if err := m.Destroy(ctx, name); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "bhyve-executor: %s destroyed (%s)\n", name, time.Since(start).Round(time.Millisecond))
	if path, err := a.statePath(); err == nil {
		_ = os.Remove(path)
	}

	found, err := m.Sweep(ctx, false)
	for _, f := range found {
		if f.Removable() {
			fmt.Fprintf(a.stdout, "bhyve-executor: swept %s (%s, job %d): %v\n", f.Name, f.Verdict, f.Job, errOrOK(f.Err))
		}
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "bhyve-executor: sweeping orphaned VMs: %v\n", err)
	}
	return nil
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
