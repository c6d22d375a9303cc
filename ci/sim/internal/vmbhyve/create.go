package vmbhyve

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/diskimage"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// checkNameRE is util::check_name (lib/vm-util) on FreeBSD 13+: egrep -i
// "^[a-z0-9][.a-z0-9_-]{0,229}[a-z0-9]$".
var checkNameRE = regexp.MustCompile(`(?i)^[a-z0-9][.a-z0-9_-]{0,229}[a-z0-9]$`)

// getoptsArgs is sh's getopts for an option string where a letter followed
// by ':' takes an argument (attached, -s20G, or the next word). Unknown
// letters print the sh diagnostic; core::create then calls util::usage.
func (v *vm) getoptsArgs(args []string, spec string) (map[byte]string, []string, bool) {
	opts := map[byte]string{}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			k := strings.IndexByte(spec, a[j])
			if k < 0 || a[j] == ':' {
				fmt.Fprintf(v.stderr, "Illegal option -%c\n", a[j])
				return nil, nil, false
			}
			if k+1 < len(spec) && spec[k+1] == ':' {
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						fmt.Fprintf(v.stderr, "No arg for -%c option\n", a[j])
						return nil, nil, false
					}
					i++
					val = args[i]
				}
				opts[a[j]] = val
				break
			}
			opts[a[j]] = "true"
		}
	}
	return opts, args[i:], true
}

// create is core::create (lib/vm-core) as of vm-bhyve 1.6 (churchers master;
// the -u user-data flag of 1.7.2+ is not reproduced). Step order and
// messages follow the shell function; disks are directories (see
// ci/sim/README.md), and -i unpacks a bhyve-sim disk image onto disk0 where
// core::write_img runs `qemu-img dd`.
func (v *vm) create(args []string) error {
	opts, rest, ok := v.getoptsArgs(args, "d:t:s:i:c:m:Ck:n:")
	if !ok || len(rest) == 0 || rest[0] == "" {
		return v.usage()
	}
	name := rest[0]
	tmpl := orDefault(opts['t'], "default")
	ds := orDefault(opts['d'], "default")

	if !checkNameRE.MatchString(name) {
		return v.errf("invalid virtual machine name - '%s'", name)
	}
	if v.guestExists(name) {
		return v.errf("virtual machine already exists in %s/%s", v.cfg.VMDir, name)
	}
	if ds != "default" {
		// datastore::get: the simulator has only the default datastore.
		return v.errf("unable to load datastore - '%s'", ds)
	}
	tmplPath := filepath.Join(v.cfg.VMDir, ".templates", tmpl+".conf")
	if st, err := os.Stat(tmplPath); err != nil || !st.Mode().IsRegular() {
		return v.errf("unable to find template %s", tmplPath)
	}
	t := loadConf(tmplPath)
	disk := t.str("disk0_name", "")
	diskDev := t.str("disk0_dev", "")
	diskSize := t.str("disk0_size", "20G")
	if disk == "" {
		return v.errf("template is missing disk0_name specification")
	}

	var keys []string
	if kf := opts['k']; kf != "" {
		if opts['C'] == "" {
			return v.errf("cloud-init is required for injecting public key. Use -C to enable it.")
		}
		b, err := os.ReadFile(kf)
		if err != nil {
			return v.errf("can't read file with public key (%s)", kf)
		}
		// sed -e '/^$/d' -e '/^#/d'
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				keys = append(keys, l)
			}
		}
	}

	// zfs::make_dataset
	dsName := v.cfg.DatasetFor(name)
	dir := v.cfg.VMPath(name)
	if err := v.zfs.Update(func(db *zfs.DB) error { return db.Create(dsName, dir) }); err != nil {
		v.zfsErr(err)
		return v.errf("failed to create new ZFS dataset %s", dsName)
	}
	b, err := os.ReadFile(tmplPath)
	if err != nil || os.WriteFile(v.cfg.ConfPath(name), b, 0o644) != nil {
		return v.errf("unable to copy template to virtual machine directory")
	}
	uuid := uuidgen()
	v.configSet(name, "uuid", uuid)
	// vm::generate_static_mac, saved as network0_mac.
	mac, _ := v.generateMAC(name, 0)
	v.configSet(name, "network0_mac", mac)
	if c := opts['c']; c != "" {
		v.configSet(name, "cpu", c)
	}
	if m := opts['m']; m != "" {
		v.configSet(name, "memory", m)
	}
	if s := opts['s']; s != "" {
		diskSize = s
	}

	num := 0
	for disk != "" {
		switch diskDev {
		case "zvol", "sparse-zvol", "custom", "iscsi":
			// The simulator has no zvols (README: not reproduced); a zvol
			// template still gets its disk as a directory so guests boot.
			if diskDev == "custom" || diskDev == "iscsi" {
				break
			}
			fallthrough
		default:
			// truncate -s SIZE + chmod 600: here an empty directory.
			p := filepath.Join(dir, disk)
			if err := os.MkdirAll(p, 0o700); err != nil {
				return v.errf("failed to create sparse file for disk image")
			}
			if num == 0 && opts['i'] != "" {
				if err := v.writeImg(p, opts['i']); err != nil {
					return err
				}
			}
		}
		v.configRemove(name, fmt.Sprintf("disk%d_size", num))
		num++
		t = loadConf(v.cfg.ConfPath(name))
		disk = t.str(fmt.Sprintf("disk%d_name", num), "")
		diskDev = t.str(fmt.Sprintf("disk%d_dev", num), "")
		diskSize = t.str(fmt.Sprintf("disk%d_size", num), "20G")
	}
	_ = diskSize // a directory has no size; qemu-img resize has nothing to do

	if opts['C'] != "" {
		if err := v.createCloudInit(name, uuid, keys, num); err != nil {
			return err
		}
	}
	return nil
}

// writeImg is core::write_img: datastore::img_find, then qemu-img dd onto
// the disk. The simulator's "qemu-img" understands only bhyve-sim disk
// images (ci/sim/internal/diskimage), which it unpacks into the disk.
func (v *vm) writeImg(disk, img string) error {
	path, ok := v.imgFind(img)
	if !ok {
		return v.errf("unable to locate img file - '%s'", img)
	}
	if err := diskimage.Unpack(path, disk); err != nil {
		fmt.Fprintf(v.stderr, "qemu-img: %v\n", err)
		return v.errf("failed to write img file with qemu-img")
	}
	return nil
}

// imgFind is datastore::img_find (lib/vm-datastore): an absolute readable
// path, then ./FILE, then $vm_dir/.img/FILE. img: datastores are not
// reproduced.
func (v *vm) imgFind(img string) (string, bool) {
	readable := func(p string) bool {
		f, err := os.Open(p)
		if err != nil {
			return false
		}
		f.Close()
		return true
	}
	if strings.HasPrefix(img, "/") && readable(img) {
		return img, true
	}
	if wd, err := os.Getwd(); err == nil && readable(filepath.Join(wd, img)) {
		return filepath.Join(wd, img), true
	}
	if p := filepath.Join(v.cfg.VMDir, ".img", img); readable(p) {
		return p, true
	}
	return "", false
}

// createCloudInit is core::create_cloud_init: .cloud-init/meta-data and
// user-data (network-config only with -n, not reproduced), then the seed
// disk entry disk<num>. vm-bhyve 1.6 runs makefs here; 1.7+ only in vm::run
// (commit f3eead3), see seedISO.
func (v *vm) createCloudInit(name, uuid string, keys []string, num int) error {
	ci := filepath.Join(v.cfg.VMPath(name), ".cloud-init")
	if err := os.MkdirAll(ci, 0o755); err != nil {
		return err
	}
	meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", uuid, name)
	user := "#cloud-config\nresize_rootfs: True\nmanage_etc_hosts: localhost\n"
	if len(keys) > 0 {
		user += "ssh_authorized_keys:\n"
		for _, k := range keys {
			user += "  - " + k + "\n"
		}
	}
	if err := os.WriteFile(filepath.Join(ci, "meta-data"), []byte(meta), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ci, "user-data"), []byte(user), 0o644); err != nil {
		return err
	}
	if !v.cfg.VersionAtLeast17() {
		if err := diskimage.WriteSeed(filepath.Join(v.cfg.VMPath(name), "seed.iso"), ci); err != nil {
			return v.errf("Can't write seed.iso for cloud-init")
		}
	}
	v.configSet(name, fmt.Sprintf("disk%d_type", num), "ahci-cd")
	v.configSet(name, fmt.Sprintf("disk%d_name", num), "seed.iso")
	v.configSet(name, fmt.Sprintf("disk%d_dev", num), "file")
	return nil
}

// seedISO is the start of vm::run in vm-bhyve 1.7+ (commit f3eead3): when
// .cloud-init/ exists and seed.iso does not, `makefs -t cd9660 -o
// R,L=cidata` builds it and logs so. That is how a clone gets per-VM
// cloud-init data: rewrite its .cloud-init/, delete seed.iso, start it.
func (v *vm) seedISO(name string) {
	if !v.cfg.VersionAtLeast17() {
		return
	}
	dir := v.cfg.VMPath(name)
	ci := filepath.Join(dir, ".cloud-init")
	seed := filepath.Join(dir, "seed.iso")
	if st, err := os.Stat(ci); err != nil || !st.IsDir() {
		return
	}
	if _, err := os.Stat(seed); err == nil {
		return
	}
	if err := diskimage.WriteSeed(seed, ci); err != nil {
		v.guestLog(name, "failed to create "+seed+" for cloud-init: "+err.Error())
		return
	}
	v.guestLog(name, "created "+seed+" for cloud-init")
}

// img is core::img: without a URL it lists $vm_dir/.img (datastore::img_list;
// img: datastores are not reproduced); fetching a URL is not reproduced,
// since the simulated host has no network. qemu-img is "installed".
func (v *vm) img(args []string) error {
	opts, rest, ok := v.getoptsArgs(args, "d:u")
	if !ok {
		return v.usage()
	}
	if len(rest) > 0 && rest[0] != "" {
		_ = opts
		return v.errf("'img URL' is not supported by the bhyve simulator (no network); copy the image into %s/.img", v.cfg.VMDir)
	}
	const format = "%-20s%s\n"
	fmt.Fprintf(v.stdout, format, "DATASTORE", "FILENAME")
	entries, err := os.ReadDir(filepath.Join(v.cfg.VMDir, ".img"))
	if err != nil {
		return nil
	}
	for _, e := range entries { // ls -1: sorted
		fmt.Fprintf(v.stdout, format, "default", e.Name())
	}
	return nil
}

// rollback is zfs::rollback (lib/vm-zfs): @ mandatory, stopped guest, then
// `zfs rollback [-r] fs@SNAP` for each dataset in a `while read` loop at the
// end of a pipeline. Its `[ $? -ne 0 ] && exit $?` exits the pipeline's
// subshell with the status of `[`, 0, so vm rollback returns 0 even when
// zfs refused, after zfs's own message on stderr (same code in 1.6 and 1.7).
func (v *vm) rollback(args []string) error {
	opts, rest, ok := v.getoptsArgs(args, "r")
	if !ok {
		return v.usage()
	}
	arg := ""
	if len(rest) > 0 {
		arg = rest[0]
	}
	if !strings.Contains(arg, "@") {
		return v.errf("a snapshot name must be provided in guest@snapshot format")
	}
	name, snap, _ := splitSnap(arg)
	if name == "" || snap == "" {
		return v.usage()
	}
	if !v.guestExists(name) {
		return v.errf("%s does not appear to be an existing virtual machine", name)
	}
	if !v.confirmStopped(name, false) {
		return exitStatus(1)
	}
	ds := v.cfg.DatasetFor(name)
	var list []string
	_ = v.zfs.View(func(db *zfs.DB) error {
		l, err := db.ListRecursive(ds)
		for _, d := range l {
			list = append(list, d.Name)
		}
		return err
	})
	for _, fs := range list {
		err := v.zfs.Update(func(db *zfs.DB) error { return db.Rollback(fs, snap, opts['r'] != "") })
		if err != nil {
			v.zfsErr(err)
			return nil // the bug: exit status 0, remaining datasets untouched
		}
	}
	return nil
}
