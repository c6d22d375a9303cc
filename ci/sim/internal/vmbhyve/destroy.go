package vmbhyve

import (
	"os"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// destroy is core::destroy.
func (v *vm) destroy(args []string) error {
	force, _, rest, err := v.parseArgs(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 || rest[0] == "" {
		return v.usage()
	}
	name := rest[0]
	if n, snap, ok := splitSnap(name); ok {
		return v.removeSnapshot(n, snap)
	}
	if !v.guestExists(name) {
		return v.errf("%s doesn't appear to be a valid virtual machine", name)
	}
	// No lock skip here: a running guest or ANY run.lock refuses.
	if !v.confirmStopped(name, false) {
		return exitStatus(1)
	}
	if !force && !v.confirm("Are you sure you want to completely remove this virtual machine") {
		return nil
	}
	ds := v.cfg.DatasetFor(name)
	// zfs::destroy_dataset: `zfs destroy -rf DS >/dev/null 2>&1`. ZFS checks
	// for dependent clones first, so a refusal removes nothing.
	if bad, _ := v.failing("destroy", name); bad {
		return v.errf("failed to destroy ZFS dataset %s", ds)
	}
	if err := v.zfs.Update(func(db *zfs.DB) error { return db.DestroyRecursive(ds) }); err != nil {
		return v.errf("failed to destroy ZFS dataset %s", ds)
	}
	if _, err := os.Stat(v.cfg.VMPath(name)); err == nil {
		if err := os.RemoveAll(v.cfg.VMPath(name)); err != nil {
			return err
		}
	}
	_ = os.Remove(v.cfg.GuestLog(name))
	return nil
}

// removeSnapshot is zfs::remove_snapshot (`vm destroy NAME@SNAP`): no
// prompt, zfs's own complaint stays visible.
func (v *vm) removeSnapshot(name, snap string) error {
	if !v.guestExists(name) {
		return v.errf("%s does not appear to be an existing virtual machine", name)
	}
	ds := v.cfg.DatasetFor(name)
	if err := v.zfs.Update(func(db *zfs.DB) error { return db.DestroySnapshot(ds, snap) }); err != nil {
		v.zfsErr(err)
		return v.errf("failed to remove snapshot %s@%s", ds, snap)
	}
	return nil
}
