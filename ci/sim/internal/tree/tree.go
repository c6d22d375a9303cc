// Package tree copies directory trees the way the simulator needs: a ZFS
// snapshot or clone is a copy of a VM's files, and a guest's disk is laid
// over its root file system. Modes (with setuid, setgid and sticky bits),
// owners and symlinks are kept; whatever already exists at a target is
// replaced.
package tree

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Copy copies src into dst. skip, if set, is asked about every path relative
// to src; a skipped directory is not descended into. Directories that
// already exist in dst, dst itself included, keep their mode and owner.
func Copy(src, dst string, skip func(rel string) bool) error {
	return filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if skip != nil && skip(rel) {
			if info.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case info.IsDir():
			// A directory that exists keeps its mode and owner: laying a
			// guest's disk over /etc must not make /etc the disk's.
			if t, err := os.Lstat(target); err == nil && t.IsDir() {
				return nil
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(target, info.Mode().Perm()|info.Mode()&(os.ModeSticky|os.ModeSetgid|os.ModeSetuid)); err != nil {
				return err
			}
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(p, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil // sockets, devices: nothing a VM's tree holds
		}
		// os.Lstat's Sys() is a *syscall.Stat_t; asserting *unix.Stat_t
		// (a distinct type) never matched, and no owner was ever copied.
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			_ = os.Lchown(target, int(st.Uid), int(st.Gid))
		}
		return nil
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	_ = os.Remove(dst) // a hard link or read-only file must not be written through
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, cerr := io.Copy(out, in)
	return errors.Join(cerr, out.Close(), os.Chmod(dst, perm))
}
