package zfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Main is the fake zfs(8) command over store, for the two forms a runner
// may need on a FreeBSD host (and nothing else: the rest of vm-bhyve's ZFS
// use happens inside the fake vm command):
//
//	zfs list -H -o name,mountpoint PATH|DATASET
//	zfs destroy -r DATASET
//
// Texts follow zfs(8): "cannot open 'X': dataset does not exist", usage
// errors with exit 2, other failures exit 1.
func Main(store *Store, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "missing command")
		return 2
	}
	var err error
	switch args[0] {
	case "list":
		err = list(store, args[1:], stdout)
	case "destroy":
		err = destroy(store, args[1:])
	default:
		fmt.Fprintf(stderr, "unrecognized command '%s'\n", args[0])
		return 2
	}
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, usage.msg)
		return 2
	default:
		fmt.Fprintln(stderr, err)
		return 1
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// list answers `-H -o name,mountpoint TARGET`. A path names the dataset it
// lives in (the one with the longest mountpoint containing it), as zfs does
// for a path argument: a plain directory inside a dataset resolves to that
// dataset, which is why callers compare the mountpoint.
func list(store *Store, args []string, stdout io.Writer) error {
	if len(args) != 4 || args[0] != "-H" || args[1] != "-o" || args[2] != "name,mountpoint" {
		return usageError{"bhyve-sim zfs: only 'list -H -o name,mountpoint TARGET' is simulated"}
	}
	target := args[3]
	return store.View(func(db *DB) error {
		var d *Dataset
		if strings.HasPrefix(target, "/") {
			if _, err := os.Stat(target); err != nil {
				return zerr("cannot open '%s': No such file or directory", target)
			}
			clean := filepath.Clean(target)
			for _, c := range db.Datasets {
				if (clean == c.Mountpoint || strings.HasPrefix(clean, c.Mountpoint+"/")) &&
					(d == nil || len(c.Mountpoint) > len(d.Mountpoint)) {
					d = c
				}
			}
		} else {
			d = db.Get(target)
		}
		if d == nil {
			return zerr("cannot open '%s': dataset does not exist", target)
		}
		fmt.Fprintf(stdout, "%s\t%s\n", d.Name, d.Mountpoint)
		return nil
	})
}

// destroy answers `-r DATASET` (DestroyRecursive: refused, with nothing
// removed, when a snapshot has dependent clones).
func destroy(store *Store, args []string) error {
	if len(args) != 2 || args[0] != "-r" || strings.Contains(args[1], "@") {
		return usageError{"bhyve-sim zfs: only 'destroy -r DATASET' is simulated"}
	}
	return store.Update(func(db *DB) error {
		if db.Get(args[1]) == nil {
			return zerr("cannot open '%s': dataset does not exist", args[1])
		}
		return db.DestroyRecursive(args[1])
	})
}
