package vmbhyve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// DefaultZFS is zfs(8) on FreeBSD, used when Driver.ZFS is empty.
var DefaultZFS = []string{"/sbin/zfs"}

// PartialClone is a directory in the default datastore that `vm clone` left
// without its NAME.conf.
type PartialClone struct {
	Name string
	// Modified is the directory's mtime: when zfs::clone last changed it.
	Modified time.Time
}

// PartialClones lists the directories under VMDir whose names start with
// prefix and that hold no NAME.conf. zfs::clone (lib/vm-zfs) creates the new
// datasets first and only then renames SRC.conf to NAME.conf, so a clone
// interrupted (or failing) in between is left in this state: not a guest to
// datastore::get_guest, hence invisible to `vm list` and refused by `vm
// destroy`, while its origin snapshot blocks destroying TEMPLATE@SNAPSHOT.
// A clone in progress looks the same; callers must tell them apart (by who
// holds the name, and by age). Reading VMDir needs no privilege.
func (d *Driver) PartialClones(prefix string) ([]PartialClone, error) {
	if prefix == "" {
		return nil, errors.New("partial clones: an empty name prefix would match every VM")
	}
	if d.VMDir == "" {
		return nil, errors.New("partial clones: vm_dir is not configured")
	}
	entries, err := os.ReadDir(d.VMDir)
	if err != nil {
		return nil, fmt.Errorf("partial clones: %w", err)
	}
	var out []PartialClone
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, prefix) || ValidName(name) != nil {
			continue
		}
		_, err := os.Stat(filepath.Join(d.VMDir, name, name+".conf"))
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, PartialClone{Name: name, Modified: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DestroyPartialClone removes a partial clone (see PartialClones) with
// `zfs destroy -r DATASET`, the only way once vm-bhyve no longer sees it.
// DATASET comes from `zfs list -H -o name,mountpoint VMDir/NAME` (no
// privilege needed) and must be mounted exactly there and end in /NAME: for
// a plain directory zfs answers with the dataset containing it, the whole
// datastore, which must never be destroyed. The destroy runs through the
// privilege prefix. It refuses if NAME.conf has appeared meanwhile.
func (d *Driver) DestroyPartialClone(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("destroy partial clone: %w", err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("destroy partial clone %s: %w", name, err)
	}
	defer unlock()
	dir := filepath.Join(d.VMDir, name)
	if _, err := os.Stat(filepath.Join(dir, name+".conf")); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("destroy partial clone %s: %s has a %s.conf (or it cannot be checked), so it is a VM now; not touched", name, dir, name)
	}
	zfs := d.ZFS
	if len(zfs) == 0 {
		zfs = DefaultZFS
	}
	argv := append(append([]string{}, zfs...), "list", "-H", "-o", "name,mountpoint", dir)
	stdout, stderr, err := d.commander().Run(ctx, argv)
	if err != nil {
		return fmt.Errorf("destroy partial clone %s: find its dataset: %w", name,
			&CommandError{Argv: argv, ExitCode: exitCodeOf(err), Stdout: string(stdout), Stderr: string(stderr), Err: err})
	}
	ds, mount, _ := strings.Cut(strings.TrimSpace(string(stdout)), "\t")
	if filepath.Clean(mount) != filepath.Clean(dir) || !strings.HasSuffix(ds, "/"+name) {
		return fmt.Errorf("destroy partial clone %s: %s is not a ZFS dataset of its own (zfs list says %q mounted at %q); not touched, remove it by hand", name, dir, ds, mount)
	}
	if _, _, err := d.run(ctx, zfs[0], zfs, []string{"destroy", "-r", ds}); err != nil {
		return fmt.Errorf("destroy partial clone %s: %w", name, err)
	}
	return nil
}

func exitCodeOf(err error) int {
	var exit interface{ ExitCode() int }
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	return -1
}
