// Package zfs is the fake ZFS behind the fake vm command: datasets,
// snapshots and clone origins kept as metadata, with each snapshot's files
// under MOUNTPOINT/.zfs/snapshot/SNAP like a real ZFS snapdir.
//
// Operations are serialised with a file lock. That models the kernel (ZFS
// holds spa_namespace_lock), not vm-bhyve, which has no lock of its own.
package zfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/tree"
)

// Error is a failure with the exact text the zfs(8) command would print on
// stderr.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func zerr(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Snapshot is one snapshot of a dataset.
type Snapshot struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// Dataset is one filesystem.
type Dataset struct {
	Name       string     `json:"name"`
	Mountpoint string     `json:"mountpoint"`
	Origin     string     `json:"origin,omitempty"`
	Created    time.Time  `json:"created"`
	Snapshots  []Snapshot `json:"snapshots,omitempty"`
}

// SnapDir is where a snapshot's files live.
func (d *Dataset) SnapDir(snap string) string {
	return filepath.Join(d.Mountpoint, ".zfs", "snapshot", snap)
}

func (d *Dataset) snapshot(name string) *Snapshot {
	for i := range d.Snapshots {
		if d.Snapshots[i].Name == name {
			return &d.Snapshots[i]
		}
	}
	return nil
}

// Store is the metadata directory of one simulated pool.
type Store struct{ dir string }

// Open returns the store kept in dir.
func Open(dir string) *Store { return &Store{dir: dir} }

// DB is the loaded metadata, valid inside View/Update.
type DB struct {
	Datasets map[string]*Dataset `json:"datasets"`
}

func (s *Store) path() string { return filepath.Join(s.dir, "datasets.json") }

func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("zfs metadata: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("zfs metadata lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("zfs metadata lock: %w", err)
	}
	return func() { f.Close() }, nil
}

func (s *Store) load() (*DB, error) {
	db := &DB{Datasets: map[string]*Dataset{}}
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return db, nil
	}
	if err != nil {
		return nil, fmt.Errorf("zfs metadata: %w", err)
	}
	if err := json.Unmarshal(b, db); err != nil {
		return nil, fmt.Errorf("zfs metadata: %w", err)
	}
	if db.Datasets == nil {
		db.Datasets = map[string]*Dataset{}
	}
	return db, nil
}

// View runs fn on a consistent snapshot of the metadata.
func (s *Store) View(fn func(*DB) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	db, err := s.load()
	if err != nil {
		return err
	}
	return fn(db)
}

// Update runs fn and saves the metadata if fn succeeds.
func (s *Store) Update(fn func(*DB) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	db, err := s.load()
	if err != nil {
		return err
	}
	ferr := fn(db)
	b, err := json.MarshalIndent(db, "", "  ")
	if err != nil {
		return errors.Join(ferr, fmt.Errorf("zfs metadata: %w", err))
	}
	tmp := s.path() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return errors.Join(ferr, fmt.Errorf("zfs metadata: %w", err))
	}
	if err := os.Rename(tmp, s.path()); err != nil {
		return errors.Join(ferr, fmt.Errorf("zfs metadata: %w", err))
	}
	return ferr
}

// Get returns a dataset or nil.
func (db *DB) Get(name string) *Dataset { return db.Datasets[name] }

// Create makes a filesystem mounted at mountpoint (zfs create).
func (db *DB) Create(name, mountpoint string) error {
	if db.Datasets[name] != nil {
		return zerr("cannot create '%s': dataset already exists", name)
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return zerr("cannot mount '%s': %v", name, err)
	}
	db.Datasets[name] = &Dataset{Name: name, Mountpoint: mountpoint, Created: time.Now()}
	return nil
}

// ListRecursive is `zfs list -rHo name -t filesystem,volume NAME`: the
// dataset first, then its descendants in name order.
func (db *DB) ListRecursive(name string) ([]*Dataset, error) {
	d := db.Datasets[name]
	if d == nil {
		return nil, zerr("cannot open '%s': dataset does not exist", name)
	}
	out := []*Dataset{d}
	var kids []string
	for n := range db.Datasets {
		if strings.HasPrefix(n, name+"/") {
			kids = append(kids, n)
		}
	}
	sort.Strings(kids)
	for _, k := range kids {
		out = append(out, db.Datasets[k])
	}
	return out, nil
}

// SnapshotExists is `zfs get creation FS@SNAP` succeeding.
func (db *DB) SnapshotExists(fsName, snap string) bool {
	d := db.Datasets[fsName]
	return d != nil && d.snapshot(snap) != nil
}

// SnapshotRecursive is `zfs snapshot -r NAME@SNAP`: it copies each dataset's
// current files (without .zfs) into its snapdir.
func (db *DB) SnapshotRecursive(name, snap string) error {
	list, err := db.ListRecursive(name)
	if err != nil {
		return err
	}
	for _, d := range list {
		if d.snapshot(snap) != nil {
			return zerr("cannot create snapshot '%s@%s': dataset already exists", d.Name, snap)
		}
	}
	for _, d := range list {
		dir := d.SnapDir(snap)
		if err := tree.Copy(d.Mountpoint, dir, skipZFSDir); err != nil {
			_ = os.RemoveAll(dir)
			return zerr("cannot create snapshot '%s@%s': %v", d.Name, snap, err)
		}
		d.Snapshots = append(d.Snapshots, Snapshot{Name: snap, Created: time.Now()})
	}
	return nil
}

// Clone is `zfs clone FS@SNAP NEWFS`: the snapshot's files appear at the
// new mountpoint and the new dataset records its origin.
func (db *DB) Clone(fsName, snap, newName, mountpoint string) error {
	d := db.Datasets[fsName]
	if d == nil || d.snapshot(snap) == nil {
		return zerr("cannot open '%s@%s': dataset does not exist", fsName, snap)
	}
	if db.Datasets[newName] != nil {
		return zerr("cannot create '%s': dataset already exists", newName)
	}
	if err := tree.Copy(d.SnapDir(snap), mountpoint, skipZFSDir); err != nil {
		_ = os.RemoveAll(mountpoint)
		return zerr("cannot create '%s': %v", newName, err)
	}
	db.Datasets[newName] = &Dataset{
		Name: newName, Mountpoint: mountpoint, Origin: fsName + "@" + snap, Created: time.Now(),
	}
	return nil
}

// Dependents lists the clones whose origin is FS@SNAP.
func (db *DB) Dependents(fsName, snap string) []string {
	var out []string
	for n, d := range db.Datasets {
		if d.Origin == fsName+"@"+snap {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func dependentsError(target, kind string, deps []string) error {
	return zerr("cannot destroy '%s': %s has dependent clones\nuse '-R' to destroy the following datasets:\n%s",
		target, kind, strings.Join(deps, "\n"))
}

// DestroySnapshot is `zfs destroy -r FS@SNAP`.
func (db *DB) DestroySnapshot(fsName, snap string) error {
	list, err := db.ListRecursive(fsName)
	if err != nil {
		return zerr("could not find any snapshots to destroy; check snapshot names.")
	}
	found := false
	for _, d := range list {
		if d.snapshot(snap) == nil {
			continue
		}
		found = true
		if deps := db.Dependents(d.Name, snap); len(deps) > 0 {
			return dependentsError(d.Name+"@"+snap, "snapshot", deps)
		}
	}
	if !found {
		return zerr("could not find any snapshots to destroy; check snapshot names.")
	}
	for _, d := range list {
		if d.snapshot(snap) == nil {
			continue
		}
		_ = os.RemoveAll(d.SnapDir(snap))
		kept := d.Snapshots[:0]
		for _, s := range d.Snapshots {
			if s.Name != snap {
				kept = append(kept, s)
			}
		}
		d.Snapshots = kept
	}
	return nil
}

// DestroyRecursive is `zfs destroy -r NAME`. ZFS checks every snapshot for
// dependent clones before destroying anything, so a refusal leaves all intact.
func (db *DB) DestroyRecursive(name string) error {
	list, err := db.ListRecursive(name)
	if err != nil {
		return err
	}
	for _, d := range list {
		for _, s := range d.Snapshots {
			if deps := db.Dependents(d.Name, s.Name); len(deps) > 0 {
				return dependentsError(d.Name, "filesystem", deps)
			}
		}
	}
	for i := len(list) - 1; i >= 0; i-- {
		d := list[i]
		if err := os.RemoveAll(d.Mountpoint); err != nil {
			return zerr("cannot destroy '%s': %v", d.Name, err)
		}
		delete(db.Datasets, d.Name)
	}
	return nil
}

// skipZFSDir leaves out a dataset's .zfs directory, where ZFS shows its
// snapshots: they are not part of the dataset's files.
func skipZFSDir(rel string) bool { return rel == ".zfs" || strings.HasPrefix(rel, ".zfs/") }

// Rollback is `zfs rollback [-r] FS@SNAP` (zfs-rollback(8); messages from
// zfs_main.c rollback_check): without -r it refuses while newer snapshots
// exist; with -r it destroys them, unless one of them has clones (only -R
// would destroy those, and vm-bhyve never passes -R). Then the dataset's
// files become the snapshot's again.
func (db *DB) Rollback(fsName, snap string, recursive bool) error {
	d := db.Datasets[fsName]
	if d == nil || d.snapshot(snap) == nil {
		return zerr("cannot open '%s@%s': dataset does not exist", fsName, snap)
	}
	var newer []string
	after := false
	for _, s := range d.Snapshots {
		if after {
			newer = append(newer, s.Name)
		}
		if s.Name == snap {
			after = true
		}
	}
	target := fsName + "@" + snap
	if len(newer) > 0 && !recursive {
		full := make([]string, len(newer))
		for i, n := range newer {
			full[i] = fsName + "@" + n
		}
		return zerr("cannot rollback to '%s': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\n%s", target, strings.Join(full, "\n"))
	}
	var clones []string
	for _, n := range newer {
		clones = append(clones, db.Dependents(fsName, n)...)
	}
	if len(clones) > 0 {
		return zerr("cannot rollback to '%s': clones of previous snapshots exist\nuse '-R' to force deletion of the following clones and dependents:\n%s", target, strings.Join(clones, "\n"))
	}
	for _, n := range newer {
		_ = os.RemoveAll(d.SnapDir(n))
	}
	d.Snapshots = d.Snapshots[:len(d.Snapshots)-len(newer)]
	// Replace the live files with the snapshot's, keeping .zfs.
	entries, err := os.ReadDir(d.Mountpoint)
	if err != nil {
		return zerr("cannot rollback '%s': %v", fsName, err)
	}
	for _, e := range entries {
		if e.Name() == ".zfs" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.Mountpoint, e.Name())); err != nil {
			return zerr("cannot rollback '%s': %v", fsName, err)
		}
	}
	if err := tree.Copy(d.SnapDir(snap), d.Mountpoint, skipZFSDir); err != nil {
		return zerr("cannot rollback '%s': %v", fsName, err)
	}
	return nil
}
