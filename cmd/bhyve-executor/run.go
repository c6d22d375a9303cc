package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
)

// runStage runs one script gitlab-runner generated (`run <script> <stage>`)
// in the job's VM. Every stage is a new process, so it opens a new SSH
// connection; see the README's "SSH connections across stages" for why this
// is not a long-lived helper process.
//
// The stage name is not checked: the script is what matters, and upstream
// adds stages (step_*, boot_verify_probes) that this version need not know.
func runStage(ctx context.Context, a *app, args []string) error {
	if len(args) != 2 {
		return usagef("run needs <script> <stage>, got %d arguments", len(args))
	}
	scriptPath := args[0]
	st, err := a.loadState()
	if err != nil {
		return err
	}
	s, err := a.settings()
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(st.Address)
	if err != nil {
		return fmt.Errorf("job state has a bad address %q: %w", st.Address, err)
	}
	script, err := os.Open(scriptPath)
	if err != nil {
		return fmt.Errorf("open the stage script: %w", err)
	}
	defer script.Close()

	h, err := a.host()
	if err != nil {
		return err
	}
	m := h.Manager(s, st.Template, "")
	// The VM answered SSH moments ago; it gets boot_timeout to answer again
	// in case it is busy, not a fresh boot's worth of patience per stage.
	actx, cancel := context.WithTimeout(ctx, s.BootTimeout)
	defer cancel()
	vm, err := m.Attach(actx, st.VM, addr)
	if err != nil {
		return err
	}
	defer vm.Detach()
	return vm.Run(ctx, script, a.stdout, a.stderr)
}
