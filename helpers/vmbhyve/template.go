package vmbhyve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"
)

// SnapshotPrefix starts the name of every snapshot `bhyve-executor
// template build` and `rotate` take: build-YYYYMMDD-HHMMSS in UTC, so that
// the newest sorts last. Other snapshots of a template are never touched.
const SnapshotPrefix = "build-"

// SnapshotLatest as the settings' snapshot means the newest SnapshotPrefix
// snapshot of the template, looked up when each job's VM is cloned.
const SnapshotLatest = "latest"

var buildSnapshotRE = regexp.MustCompile(`^` + SnapshotPrefix + `[0-9]{8}-[0-9]{6}$`)

// BuildSnapshotName is the snapshot name for a build at t.
func BuildSnapshotName(t time.Time) string {
	return SnapshotPrefix + t.UTC().Format("20060102-150405")
}

// CreateOptions are `vm create`'s flags (core::create, lib/vm-core).
type CreateOptions struct {
	Profile string // -t: $vm_dir/.templates/PROFILE.conf
	Size    string // -s: disk0 size
	Memory  string // -m
	CPUs    string // -c
	Image   string // -i: written onto disk0 with qemu-img dd
	// PublicKeyFile (-C -k) is given to the image's default user through
	// vm-bhyve's cloud-init seed.
	PublicKeyFile string
}

// CreateArgs is the argument list of `vm create` for o and name.
func CreateArgs(name string, o CreateOptions) []string {
	args := []string{"create"}
	for _, f := range []struct{ flag, val string }{{"-t", o.Profile}, {"-s", o.Size}, {"-m", o.Memory}, {"-c", o.CPUs}, {"-i", o.Image}} {
		if f.val != "" {
			args = append(args, f.flag, f.val)
		}
	}
	if o.PublicKeyFile != "" {
		args = append(args, "-C", "-k", o.PublicKeyFile)
	}
	return append(args, name)
}

// Create runs `vm create`. core::create exits 0 silently on success and
// reports every refusal through util::err.
func (d *Driver) Create(ctx context.Context, name string, o CreateOptions) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("create VM %s: %w", name, err)
	}
	defer unlock()
	if _, _, err := d.vm(ctx, CreateArgs(name, o)...); err != nil {
		return fmt.Errorf("create VM %s: %w", name, err)
	}
	return nil
}

// Snapshot runs `vm snapshot NAME@SNAP` (zfs::snapshot, lib/vm-zfs), which
// refuses a running or locked guest (no -f: a snapshot of a running guest
// carries run.lock into every clone), then checks the snapshot is there.
func (d *Driver) Snapshot(ctx context.Context, name, snap string) error {
	if err := validSnapshot(snap); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", name, snap, err)
	}
	defer unlock()
	if _, _, err := d.vm(ctx, "snapshot", name+"@"+snap); err != nil {
		return fmt.Errorf("snapshot %s@%s: %w", name, snap, err)
	}
	if ok, err := d.HasSnapshot(name, snap); err != nil || !ok {
		return fmt.Errorf("snapshot %s@%s: vm snapshot succeeded but %s does not exist (%v)", name, snap, d.snapshotDir(name, snap), err)
	}
	return nil
}

// ErrDependentClones: ZFS refused to destroy a snapshot that clones (job
// VMs) still depend on (zfs-destroy(8): "snapshot has dependent clones").
var ErrDependentClones = errors.New("snapshot has dependent clones")

// DestroySnapshot runs `vm destroy NAME@SNAP` (zfs::remove_snapshot, `zfs
// destroy -r`, never -R). While any clone depends on the snapshot ZFS
// refuses and nothing is removed; that error wraps ErrDependentClones.
func (d *Driver) DestroySnapshot(ctx context.Context, name, snap string) error {
	if err := validSnapshot(snap); err != nil {
		return fmt.Errorf("destroy snapshot: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("destroy %s@%s: %w", name, snap, err)
	}
	defer unlock()
	_, stderr, err := d.vm(ctx, "destroy", name+"@"+snap)
	if err != nil {
		if regexp.MustCompile(`dependent clones`).MatchString(stderr) {
			return fmt.Errorf("destroy %s@%s: %w: %w", name, snap, ErrDependentClones, err)
		}
		return fmt.Errorf("destroy %s@%s: %w", name, snap, err)
	}
	return nil
}

// Rollback runs `vm rollback -r NAME@SNAP` (zfs::rollback) and then checks
// the result, because zfs::rollback exits 0 even when zfs refused (its
// `[ $? -ne 0 ] && exit $?` exits with the status of `[`): afterwards no
// snapshot newer than SNAP may be left. A refusal's zfs message (e.g.
// "clones of previous snapshots exist") is in the error.
func (d *Driver) Rollback(ctx context.Context, name, snap string) error {
	if err := validSnapshot(snap); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	before, err := d.Snapshots(name)
	if err != nil {
		return fmt.Errorf("rollback %s@%s: %w", name, snap, err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("rollback %s@%s: %w", name, snap, err)
	}
	defer unlock()
	_, stderr, err := d.vm(ctx, "rollback", "-r", name+"@"+snap)
	if err != nil {
		return fmt.Errorf("rollback %s@%s: %w", name, snap, err)
	}
	after, err := d.Snapshots(name)
	if err != nil {
		return fmt.Errorf("rollback %s@%s: %w", name, snap, err)
	}
	var left []string
	seen := false
	for _, s := range before {
		if seen && contains(after, s) {
			left = append(left, s)
		}
		if s == snap {
			seen = true
		}
	}
	if !seen || len(left) > 0 || !contains(after, snap) {
		return fmt.Errorf("rollback %s@%s: vm rollback exited 0 but did not roll back (newer snapshots still there: %v); zfs said: %q", name, snap, left, stderr)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (d *Driver) snapshotDir(name, snap string) string {
	return filepath.Join(d.VMDir, name, ".zfs", "snapshot", snap)
}

// Snapshots lists the ZFS snapshots of a guest's dataset in name order,
// read from its .zfs/snapshot directory (visible even with snapdir=hidden,
// and readable without privilege).
func (d *Driver) Snapshots(name string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(d.VMDir, name, ".zfs", "snapshot"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(d.VMDir, name)); serr != nil {
			return nil, fmt.Errorf("snapshots of %s: %w", name, ErrNotFound)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots of %s: %w", name, err)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, nil
}

// HasSnapshot reports whether NAME@SNAP exists.
func (d *Driver) HasSnapshot(name, snap string) (bool, error) {
	_, err := os.Stat(d.snapshotDir(name, snap))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// BuildSnapshots are the template's SnapshotPrefix snapshots, oldest first.
func (d *Driver) BuildSnapshots(name string) ([]string, error) {
	all, err := d.Snapshots(name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range all {
		if buildSnapshotRE.MatchString(s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// ResolveSnapshot turns the settings' snapshot into the one to clone:
// SnapshotLatest is the newest build snapshot of template, anything else
// is itself.
func (d *Driver) ResolveSnapshot(template, snapshot string) (string, error) {
	if snapshot != SnapshotLatest {
		return snapshot, nil
	}
	builds, err := d.BuildSnapshots(template)
	if err != nil {
		return "", fmt.Errorf("snapshot %q of %s: %w", snapshot, template, err)
	}
	if len(builds) == 0 {
		return "", fmt.Errorf("snapshot %q of %s: %w: the template has no %s… snapshot; build one with `bhyve-executor template build %s` or name a snapshot", snapshot, template, ErrNotFound, SnapshotPrefix, template)
	}
	return builds[len(builds)-1], nil
}
