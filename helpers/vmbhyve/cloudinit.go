package vmbhyve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// A clone inherits its template's cloud-init directory NAME/.cloud-init/
// and, once the template has been started, its seed NAME/seed.iso: both
// live in the dataset `zfs clone` copies (zfs::clone, lib/vm-zfs). `vm
// create -C` lists the seed as a CD in the conf (disk<N>_name="seed.iso",
// core::create_cloud_init) and vm-bhyve 1.7.0+ builds it at the top of `vm
// _run` when .cloud-init/ exists and seed.iso does not (vm::run, commit
// f3eead3). Rewriting .cloud-init/ and deleting seed.iso before `vm start`
// therefore gives a clone cloud-init data of its own.

const (
	cloudInitDir = ".cloud-init"
	seedFile     = "seed.iso"
)

// CloudInit is what a clone inherited for cloud-init.
type CloudInit struct {
	// Dir: NAME/.cloud-init/ exists.
	Dir bool
	// SeedDisk: NAME.conf attaches seed.iso as a disk.
	SeedDisk bool
	// UserData and NetworkConfig are the inherited files, nil when absent.
	UserData, NetworkConfig []byte
}

// CloudInit reads what name inherited, without privilege: vm-bhyve writes
// these files with root's default umask (0644).
func (d *Driver) CloudInit(name string) (CloudInit, error) {
	conf, err := d.ReadConf(name)
	if err != nil {
		return CloudInit{}, err
	}
	return readCloudInit(name, conf, filepath.Join(d.VMDir, name, cloudInitDir))
}

// SnapshotCloudInit is CloudInit for what every clone of template@snap
// will inherit, read from the snapshot itself.
func (d *Driver) SnapshotCloudInit(template, snap string) (CloudInit, error) {
	if err := ValidName(template); err != nil {
		return CloudInit{}, err
	}
	dir := d.snapshotDir(template, snap)
	data, err := os.ReadFile(filepath.Join(dir, template+".conf"))
	if err != nil {
		return CloudInit{}, fmt.Errorf("cloud-init of %s@%s: %w", template, snap, err)
	}
	return readCloudInit(template+"@"+snap, parseConf(data), filepath.Join(dir, cloudInitDir))
}

func readCloudInit(what string, conf map[string]string, dir string) (CloudInit, error) {
	var ci CloudInit
	for k, v := range conf {
		if diskNameKey.MatchString(k) && v == seedFile {
			ci.SeedDisk = true
		}
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ci, nil
	case err != nil:
		return CloudInit{}, fmt.Errorf("cloud-init of %s: %w", what, err)
	}
	ci.Dir = st.IsDir()
	if !ci.Dir {
		return ci, nil
	}
	read := func(file string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cloud-init of %s: %w", what, err)
		}
		if b == nil {
			b = []byte{}
		}
		return b, nil
	}
	if ci.UserData, err = read("user-data"); err != nil {
		return CloudInit{}, err
	}
	if ci.NetworkConfig, err = read("network-config"); err != nil {
		return CloudInit{}, err
	}
	return ci, nil
}

var diskNameKey = regexp.MustCompile(`^disk[0-9]+_name$`)

// seedFileNames are the only files WriteCloudInit puts into .cloud-init/.
var seedFileNames = map[string]bool{"meta-data": true, "user-data": true, "network-config": true}

// SeedFile is one file for a clone's .cloud-init/.
type SeedFile struct {
	Name string
	Data []byte
}

// StagingPattern names the runner's staging directories for seed files
// (os.MkdirTemp replaces the * with digits); the README's sudoers rule for
// install matches it.
const StagingPattern = "bhyve-ci-seed-*"

// WriteCloudInit replaces files in name's .cloud-init/ and removes its
// seed.iso, so that `vm start` seeds the guest from them. The clone's
// directory belongs to root, so the files are staged in a directory of the
// runner's own (mode 0700, removed afterwards: it may hold a private key)
// and copied with one `install -m 0600 SRC... DIR/.cloud-init`, then `rm -f
// DIR/seed.iso`, both through Privilege.
func (d *Driver) WriteCloudInit(ctx context.Context, name string, files []SeedFile) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("write cloud-init: %w", err)
	}
	if len(d.Install) == 0 || len(d.Rm) == 0 {
		return failure.Configf("write cloud-init of %s: install_command and rm_command must be set (e.g. /usr/bin/install, /bin/rm)", name)
	}
	if len(files) < 2 {
		// install(1) takes the last argument as a directory only with two
		// or more sources.
		return fmt.Errorf("write cloud-init of %s: want at least meta-data and user-data, got %d file(s)", name, len(files))
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("write cloud-init of %s: %w", name, err)
	}
	defer unlock()

	stage, err := os.MkdirTemp("", StagingPattern)
	if err != nil {
		return fmt.Errorf("write cloud-init of %s: %w", name, err)
	}
	defer os.RemoveAll(stage)
	args := []string{"-m", "0600"}
	for _, f := range files {
		if !seedFileNames[f.Name] {
			return fmt.Errorf("write cloud-init of %s: unexpected file %q", name, f.Name)
		}
		p := filepath.Join(stage, f.Name)
		if err := os.WriteFile(p, f.Data, 0o600); err != nil {
			return fmt.Errorf("write cloud-init of %s: stage %s: %w", name, f.Name, err)
		}
		args = append(args, p)
	}
	dir := filepath.Join(d.VMDir, name)
	args = append(args, filepath.Join(dir, cloudInitDir))
	if _, _, err := d.run(ctx, d.Install[0], d.Install, args); err != nil {
		return fmt.Errorf("write cloud-init of %s: %w", name, err)
	}
	seed := filepath.Join(dir, seedFile)
	if _, _, err := d.run(ctx, d.Rm[0], d.Rm, []string{"-f", seed}); err != nil {
		return fmt.Errorf("write cloud-init of %s: remove the inherited seed: %w", name, err)
	}
	if _, err := os.Stat(seed); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write cloud-init of %s: %s is still there after rm -f (%v); vm start would boot the template's seed", name, seed, err)
	}
	return nil
}

// SeedBuiltAtStart reports whether this vm-bhyve builds a missing seed.iso
// at `vm start` (1.7.0+); the answer is asked once per Driver.
func (d *Driver) SeedBuiltAtStart(ctx context.Context) (bool, string, error) {
	d.versionMu.Lock()
	defer d.versionMu.Unlock()
	if d.version == nil {
		s, err := d.Version(ctx)
		if err != nil {
			return false, "", err
		}
		v, err := ParseVersion(s)
		if err != nil {
			return false, "", err
		}
		d.version = &v
	}
	return d.version.AtLeast(1, 7), d.version.String(), nil
}
