package vmbhyve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// confirmStopped is vm::confirm_stopped. Any run.lock refuses, unless
// skipLock is set and the lock names this host (a stale local lock); an
// existing /dev/vmm/NAME refuses too. The warnings go to stderr.
func (v *vm) confirmStopped(name string, skipLock bool) bool {
	if host, ok := firstLine(filepath.Join(v.cfg.VMPath(name), "run.lock")); ok {
		if host != v.host || !skipLock {
			v.warnf("%s appears to be running on %s (locked)", name, host)
			return false
		}
	}
	if v.vmmExists(name) {
		v.warnf("%s appears to be running locally (vmm exists)", name)
		return false
	}
	return true
}

// quiet runs fn with stdout and stderr discarded (`>/dev/null 2>&1`).
func (v *vm) quiet(fn func() bool) bool {
	o, e := v.stdout, v.stderr
	v.stdout, v.stderr = discard{}, discard{}
	defer func() { v.stdout, v.stderr = o, e }()
	return fn()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// lineage lists the VM and the templates it was cloned from, oldest first,
// following ZFS clone origins. Fault knobs are inherited along it.
func (v *vm) lineage(name string) []string {
	out := []string{name}
	_ = v.zfs.View(func(db *zfs.DB) error {
		seen := map[string]bool{name: true}
		cur := name
		for {
			d := db.Get(v.cfg.DatasetFor(cur))
			if d == nil || d.Origin == "" {
				return nil
			}
			parent := v.cfg.NameFromDataset(strings.SplitN(d.Origin, "@", 2)[0])
			if parent == "" || seen[parent] {
				return nil
			}
			seen[parent] = true
			out = append([]string{parent}, out...)
			cur = parent
		}
	})
	return out
}

func (v *vm) fault(name string) simstate.Fault {
	f, _ := v.cfg.EffectiveFault(v.lineage(name))
	return f
}

// failing consumes a configured failure of subcommand cmd for name.
func (v *vm) failing(cmd string, names ...string) (bool, string) {
	for _, n := range names {
		if n == "" {
			continue
		}
		ok, msg, err := v.cfg.ConsumeFailure(cmd, v.lineage(n))
		if err == nil && ok {
			return true, msg
		}
	}
	return false, ""
}

// zfsErr prints a zfs(8) diagnostic the way vm-bhyve lets it through.
func (v *vm) zfsErr(err error) {
	var ze *zfs.Error
	if errors.As(err, &ze) {
		fmt.Fprintln(v.stderr, ze.Msg)
		return
	}
	fmt.Fprintln(v.stderr, err)
}

// splitSnap is ${x%%@*} and ${x##*@}.
func splitSnap(s string) (name, snap string, has bool) {
	if !strings.Contains(s, "@") {
		return s, "", false
	}
	return s[:strings.Index(s, "@")], s[strings.LastIndex(s, "@")+1:], true
}

// clone is zfs::clone (lib/vm-zfs).
func (v *vm) clone(args []string) error {
	var old, name string
	if len(args) > 0 {
		old = args[0]
	}
	if len(args) > 1 {
		name = args[1]
	}
	if old == "" || name == "" {
		return v.usage()
	}
	if v.guestExists(name) {
		return v.errf("new guest already exists in %s/%s", v.cfg.VMDir, name)
	}
	old, snap, hasSnap := splitSnap(old)
	if !v.guestExists(old) {
		return v.errf("%s does not appear to be an existing virtual machine", old)
	}
	ds := v.cfg.DatasetFor(old)
	var fsList []string
	if err := v.zfs.View(func(db *zfs.DB) error {
		list, err := db.ListRecursive(ds)
		for _, d := range list {
			fsList = append(fsList, d.Name)
		}
		return err
	}); err != nil {
		v.zfsErr(err)
		return v.errf("unable to list datasets for %s", ds)
	}

	if !hasSnap {
		// A bare source is snapshotted now, under the first 8 hex digits of
		// a fresh uuid; vm-bhyve never removes that snapshot.
		if !v.confirmStopped(old, false) {
			return exitStatus(1)
		}
		if v.cfg.VersionAtLeast17() && v.hasSavedState(old) {
			return v.errf("guest appears to be suspended, stop it before cloning")
		}
		snap = uuidgen()[:8]
		if err := v.zfs.Update(func(db *zfs.DB) error { return db.SnapshotRecursive(ds, snap) }); err != nil {
			v.zfsErr(err)
			return v.errf("failed to create snapshot %s@%s", ds, snap)
		}
	} else {
		var missing string
		_ = v.zfs.View(func(db *zfs.DB) error {
			for _, fs := range fsList {
				if !db.SnapshotExists(fs, snap) {
					missing = fs
					return nil
				}
			}
			return nil
		})
		if missing != "" {
			return v.errf("snapshot %s@%s doesn't seem to exist", missing, snap)
		}
	}

	newDS := v.cfg.DatasetFor(name)
	for _, fs := range fsList {
		newfs := strings.Replace(fs, ds, newDS, 1)
		if fail, msg := v.failing("clone", old, name); fail {
			if msg == "" {
				msg = fmt.Sprintf("cannot create '%s': out of space", newfs)
			}
			fmt.Fprintln(v.stderr, msg)
			return v.errf("error while cloning dataset %s@%s", fs, snap)
		}
		mount := filepath.Join(v.cfg.VMDir, strings.TrimPrefix(newfs, v.cfg.Dataset+"/"))
		if err := v.zfs.Update(func(db *zfs.DB) error { return db.Clone(fs, snap, newfs, mount) }); err != nil {
			v.zfsErr(err)
			return v.errf("error while cloning dataset %s@%s", fs, snap)
		}
	}

	// The clone now exists as datasets only (NEW/SRC.conf, no NEW.conf):
	// invisible to datastore::get_guest, so to vm list and vm destroy.
	if d := v.fault(old).Over(v.fault(name)).CloneDelay; d > 0 {
		time.Sleep(time.Duration(d))
	}
	dir := v.cfg.VMPath(name)
	_ = os.Remove(filepath.Join(dir, "vm-bhyve.log"))
	renameFails, _ := v.failing("clone-rename", old, name)
	if renameFails || os.Rename(filepath.Join(dir, old+".conf"), filepath.Join(dir, name+".conf")) != nil {
		// Nothing is rolled back: the datasets stay, without NAME.conf, so
		// vm list and vm destroy no longer see them.
		v.out("Unable to rename configuration file to %s.conf", name)
		v.out("This will need to be renamed manually")
		v.out("Please also remove any uuid or mac address settings, these will be regenerated automatically")
		return exitStatus(1)
	}
	v.generalise(name)

	if content, ok := v.fault(name).LockContent(v.host); ok {
		_ = os.WriteFile(filepath.Join(dir, "run.lock"), []byte(content), 0o644)
	}
	return nil
}

// generalise is vm::generalise: drop uuid and network0_mac, network1_mac, ...
// stopping at the first gap. run.lock, console and the rest stay.
func (v *vm) generalise(name string) {
	c := loadConf(v.cfg.ConfPath(name))
	v.configRemove(name, "uuid")
	for n := 0; ; n++ {
		key := fmt.Sprintf("network%d_mac", n)
		if val, _ := c.get(key, ""); val == "" {
			break
		}
		v.configRemove(name, key)
	}
}

// snapshot is zfs::snapshot: refuses a running guest unless -f, which is how
// a run.lock ends up inside a snapshot (and then in every clone of it).
func (v *vm) snapshot(args []string) error {
	force, _, rest, err := v.parseArgs(args)
	if err != nil {
		return err
	}
	var name, snap string
	if len(rest) > 0 {
		name = rest[0]
	}
	name, snap, _ = splitSnap(name)
	if name == "" {
		return v.usage()
	}
	if !v.guestExists(name) {
		return v.errf("%s does not appear to be an existing virtual machine", name)
	}
	if snap == "" {
		snap = v.now().Format("2006-01-02-15:04:05")
	}
	o := v.stdout
	v.stdout = discard{}
	stopped := v.confirmStopped(name, false)
	v.stdout = o
	if !stopped && !force {
		return v.errf("%s must be powered off first (use -f to override)", name)
	}
	ds := v.cfg.DatasetFor(name)
	if err := v.zfs.Update(func(db *zfs.DB) error { return db.SnapshotRecursive(ds, snap) }); err != nil {
		v.zfsErr(err)
		return v.errf("failed to create recursive snapshot of virtual machine")
	}
	return nil
}
