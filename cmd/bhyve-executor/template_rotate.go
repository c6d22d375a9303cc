package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

const defaultKeep = 2

// templateRotate is `template rotate NAME`: boot the template itself (never
// a clone: clones carry job leftovers), upgrade and re-provision it, stop,
// snapshot. Jobs with snapshot = "latest" clone the new snapshot from
// their next prepare on; running jobs keep the clones they have. Then the
// old snapshots beyond --keep are pruned where no clone depends on them.
func templateRotate(ctx context.Context, a *app, args []string) error {
	name, rest := splitName(args)
	fs := flag.NewFlagSet("template rotate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	adminUser := fs.String("admin-user", "freebsd", "the image's default user, who has the runner's key")
	keep := fs.Int("keep", defaultKeep, "build snapshots to keep for rollback, the new one included")
	var po provisionOptions
	fs.StringVar(&po.script, "provision", "", "operator script run as root after the default provisioning")
	fs.StringVar(&po.packages, "packages", "", "extra packages, space separated")
	fs.StringVar(&po.runnerBinary, "runner-binary", defaultRunnerBinary, "the host's gitlab-runner, copied into the guest")
	fs.StringVar(&po.runnerURL, "runner-url", "", "fetch gitlab-runner from this URL in the guest instead")
	if err := fs.Parse(rest); err != nil || fs.NArg() > 0 || name == "" || *keep < 1 {
		return usagef("usage: template rotate %s (--keep at least 1)", templateSubcommands[2].usage)
	}
	e, err := a.templateEnv(name)
	if err != nil {
		return err
	}
	po.script, po.runnerBinary = absPath(po.script), absPath(po.runnerBinary)
	if po.runnerURL == "" {
		if po.runnerVersion, err = hostRunnerVersion(ctx, po.runnerBinary); err != nil {
			return err
		}
	}
	pins, err := e.s.HostKeysFor(name)
	if err != nil {
		return err
	}
	vm, exists, err := e.d.Get(ctx, name)
	switch {
	case err != nil:
		return err
	case !exists:
		return fmt.Errorf("no VM %s; build it first with `template build %s --image FILE`", name, name)
	case vm.State != vmbhyve.StateStopped:
		return fmt.Errorf("%s is %s; a template must be stopped to be rotated (vm stop %s)", name, vm.StateText, name)
	}
	e.logf("booting template %s", name)
	g, err := e.boot(ctx, name, *adminUser, pins)
	if err != nil {
		return fmt.Errorf("boot %s: %w", name, err)
	}
	defer g.client.Close()
	if err := e.provision(ctx, g, po, true); err != nil {
		return err
	}
	snap := vmbhyve.BuildSnapshotName(time.Now())
	if err := e.finish(ctx, g, snap); err != nil {
		return err
	}
	return e.prune(ctx, *keep)
}

// templatePrune is `template prune NAME`: destroy build snapshots beyond
// --keep that no clone depends on. Run it again after long jobs end.
func templatePrune(ctx context.Context, a *app, args []string) error {
	name, rest := splitName(args)
	fs := flag.NewFlagSet("template prune", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	keep := fs.Int("keep", defaultKeep, "build snapshots to keep for rollback")
	if err := fs.Parse(rest); err != nil || fs.NArg() > 0 || name == "" || *keep < 1 {
		return usagef("usage: template prune %s (--keep at least 1)", templateSubcommands[3].usage)
	}
	e, err := a.templateEnv(name)
	if err != nil {
		return err
	}
	return e.prune(ctx, *keep)
}

// prune destroys the build snapshots older than the newest keep. ZFS
// refuses those that clones still depend on (running jobs); they stay, and
// a later prune takes them. Never forced: -R would destroy the clones.
func (e *templateEnv) prune(ctx context.Context, keep int) error {
	builds, err := e.d.BuildSnapshots(e.name)
	if err != nil {
		return err
	}
	if len(builds) <= keep {
		e.logf("%d build snapshot(s) of %s, keeping all (--keep %d)", len(builds), e.name, keep)
		return nil
	}
	for _, s := range builds[:len(builds)-keep] {
		err := e.d.DestroySnapshot(ctx, e.name, s)
		switch {
		case err == nil:
			e.logf("destroyed %s@%s", e.name, s)
		case errors.Is(err, vmbhyve.ErrDependentClones):
			e.logf("kept %s@%s: clones (running jobs) still depend on it; run `template prune %s` once they are gone", e.name, s, e.name)
		default:
			return err
		}
	}
	return nil
}

// templateRollback is `template rollback NAME`: back to the build before
// the newest, by `vm rollback -r`, which destroys the newest. Its exit
// status is not trusted (Driver.Rollback verifies).
func templateRollback(ctx context.Context, a *app, args []string) error {
	name, rest := splitName(args)
	if len(rest) > 0 || name == "" {
		return usagef("usage: template rollback NAME")
	}
	e, err := a.templateEnv(name)
	if err != nil {
		return err
	}
	builds, err := e.d.BuildSnapshots(name)
	if err != nil {
		return err
	}
	if len(builds) < 2 {
		return fmt.Errorf("%s has %d build snapshot(s); a rollback needs an older one to go back to", name, len(builds))
	}
	prev, newest := builds[len(builds)-2], builds[len(builds)-1]
	if err := e.d.Rollback(ctx, name, prev); err != nil {
		return fmt.Errorf("%w; if jobs still run on %s@%s, wait for them to finish and retry", err, name, newest)
	}
	e.logf("%s rolled back to %s@%s (%s destroyed); jobs with snapshot = %q now clone %s", name, name, prev, newest, vmbhyve.SnapshotLatest, prev)
	return nil
}
