// Package diskimage is the simulator's stand-in for the two kinds of disk
// content vm-bhyve writes without understanding them: a cloud image that
// `vm create -i` copies onto disk0 with `qemu-img dd`, and the cloud-init
// seed (`makefs -t cd9660 -o R,L=cidata seed.iso .cloud-init`).
//
// A bhyve-sim disk image is a tar archive whose first member is the regular
// file ".bhyve-sim-image" (content "bhyve-sim disk image 1\n"); the other
// members are laid over the guest's root at boot, exactly like the files of
// any simulated disk (ci/sim/README.md). The marker stays on the disk: it
// tells the simulated guest that it boots a FreeBSD cloud image (nuageinit,
// first boot, sshd generating missing host keys). A seed.iso is a tar of
// the .cloud-init directory's files.
package diskimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Marker is the first member of every bhyve-sim disk image, and stays on
// the disk it was written to.
const (
	Marker        = ".bhyve-sim-image"
	markerContent = "bhyve-sim disk image 1\n"
)

// File is one member of an image.
type File struct {
	Path string // relative to the guest's root, e.g. "etc/rc.conf"
	Mode os.FileMode
	Body string
	Dir  bool
}

// Write writes an image with files (directories are created as needed).
func Write(dst string, files []File) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	all := append([]File{{Path: Marker, Mode: 0o644, Body: markerContent}}, files...)
	for _, f := range all {
		h := &tar.Header{Name: f.Path, Mode: int64(f.Mode.Perm()), Size: int64(len(f.Body)), Typeflag: tar.TypeReg}
		if f.Dir {
			h.Typeflag, h.Size, h.Name = tar.TypeDir, 0, strings.TrimSuffix(f.Path, "/")+"/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !f.Dir {
			if _, err := io.WriteString(tw, f.Body); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

// Unpack writes the image at src onto the disk directory dst. Anything that
// is not a bhyve-sim image is refused: the simulator cannot boot a real
// FreeBSD image.
func Unpack(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	first := true
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if first {
				return fmt.Errorf("%s: empty file, not a bhyve-sim disk image", src)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s is not a bhyve-sim disk image (a tar whose first member is %s): %w", src, Marker, err)
		}
		if first && (h.Name != Marker || h.Typeflag != tar.TypeReg) {
			return fmt.Errorf("%s is not a bhyve-sim disk image: first member is %q, want %s", src, h.Name, Marker)
		}
		first = false
		rel := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("%s: member %q leaves the disk", src, h.Name)
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, os.FileMode(h.Mode).Perm()|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, cerr := io.Copy(out, tr)
			if err := errors.Join(cerr, out.Close()); err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = os.Remove(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		}
	}
}

// IsImageDisk reports whether the disk directory was written from a
// bhyve-sim image.
func IsImageDisk(disk string) bool {
	_, err := os.Stat(filepath.Join(disk, Marker))
	return err == nil
}

// WriteSeed is makefs -t cd9660 -o R,L=cidata SEED DIR: every regular file
// of dir, in name order.
func WriteSeed(seed, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(seed, buf.Bytes(), 0o644)
}

// ReadSeed returns the files of a seed written by WriteSeed.
func ReadSeed(seed string) (map[string]string, error) {
	f, err := os.Open(seed)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("seed %s: %w", seed, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out[h.Name] = string(b)
	}
}

// FreeBSDCloudInit is what the simulator knows of FreeBSD's
// BASIC-CLOUDINIT image (release/tools/basic-cloudinit.conf and
// vmimage.subr, via ../shared/research/templates-isolation.md §4): the
// first-boot marker, nuageinit and sshd enabled, sshd_config with password
// logins on, the serial console in loader.conf.
func FreeBSDCloudInit() []File {
	return []File{
		{Path: "firstboot", Mode: 0o644},
		{Path: "etc/rc.conf", Mode: 0o644, Body: "nuageinit_enable=\"YES\"\nsshd_enable=\"YES\"\ngrowfs_enable=\"YES\"\n"},
		{Path: "etc/ssh/sshd_config", Mode: 0o644, Body: "# FreeBSD BASIC-CLOUDINIT image (bhyve-sim stand-in)\nPasswordAuthentication yes\nUsePAM no\n"},
		{Path: "boot/loader.conf", Mode: 0o644, Body: "console=\"comconsole,vidconsole\"\n"},
		{Path: "usr/libexec/nuageinit", Mode: 0o755, Body: "#!/bin/sh\n# bhyve-sim stand-in: the simulated guest's init applies the cloud-init seed itself.\nexit 0\n"},
	}
}
