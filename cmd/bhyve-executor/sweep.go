package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// sweepCommand lists this runner's job VMs that no live gitlab-runner holds
// any more, and destroys them with --force. VMs that merely share the name
// prefix are listed as "not ours" and never touched.
func sweepCommand(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	force := fs.Bool("force", false, "destroy the orphaned VMs (default: only list them)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usagef("usage: sweep [--force]")
	}
	s, err := a.settings()
	if err != nil {
		return err
	}
	h, err := a.host()
	if err != nil {
		return err
	}
	found, err := h.Manager(s, "", "").Sweep(ctx, !*force)
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tJOB\tVERDICT\tACTION")
	orphans, failed := 0, 0
	for _, f := range found {
		action := "-"
		if f.Verdict == jobvm.HolderUnknown {
			action = "left alone: " + f.Err.Error()
		}
		if f.Removable() {
			orphans++
			switch {
			case !*force:
				action = "would destroy"
			case f.Err != nil:
				failed++
				action = "destroy failed: " + f.Err.Error()
			default:
				action = "destroyed"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", f.Name, f.State, f.Job, f.Verdict, action)
	}
	tw.Flush()
	switch {
	case len(found) == 0:
		fmt.Fprintf(a.stdout, "no VMs named %s* besides the template\n", s.NamePrefix)
	case orphans > 0 && !*force:
		fmt.Fprintf(a.stdout, "%d orphaned VM(s); run `bhyve-executor sweep --force` to destroy them\n", orphans)
	}
	if failed > 0 {
		return fmt.Errorf("%d orphaned VM(s) could not be destroyed", failed)
	}
	return nil
}
