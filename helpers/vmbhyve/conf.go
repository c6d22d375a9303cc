package vmbhyve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// confPath is where vm-bhyve keeps a guest's settings in the default
// datastore (datastore::get_guest in lib/vm-datastore: vm_dir/NAME/NAME.conf).
func (d *Driver) confPath(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if d.VMDir == "" {
		return "", errors.New("VMDir is not configured")
	}
	return filepath.Join(d.VMDir, name, name+".conf"), nil
}

// ReadConf reads VMDir/NAME/NAME.conf the way vm-bhyve does (see parseConf).
// A missing file is an error wrapping both ErrNotFound and fs.ErrNotExist.
func (d *Driver) ReadConf(name string) (map[string]string, error) {
	path, err := d.confPath(name)
	if err != nil {
		return nil, fmt.Errorf("read conf: %w", err)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read conf of VM %s: %w: %w", name, ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read conf of VM %s: %w", name, err)
	}
	return parseConf(data), nil
}

// parseConf mirrors config::load and config::get (lib/vm-config), so the map
// holds what vm-bhyve itself will use: only lines starting with a lower-case
// letter count, everything from the first '#' is dropped, trailing spaces are
// trimmed, every '"' is removed, the key is the text before the first '=',
// and the first line for a key wins.
func parseConf(data []byte) map[string]string {
	conf := map[string]string{}
	eachConfLine(data, func(key, value string) {
		if _, seen := conf[key]; !seen {
			conf[key] = value
		}
	})
	return conf
}

// eachConfLine calls fn for every assignment config::load keeps, duplicates
// included.
func eachConfLine(data []byte, fn func(key, value string)) {
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || line[0] < 'a' || line[0] > 'z' {
			continue
		}
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimRight(line, " ")
		line = strings.ReplaceAll(line, `"`, "")
		if key, value, ok := strings.Cut(line, "="); ok {
			fn(key, value)
		}
	}
}

// confKey is a key config::load will see (it keeps lines starting with
// [a-z]) and sysrc will accept as a shell variable name.
var confKey = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// SetConf writes "key=value" pairs into VMDir/NAME/NAME.conf with one
// `<Privilege> <Sysrc> -f PATH key=value ...`, the way vm-bhyve's config::set
// does (sysrc -f). Values may not contain what would change their meaning
// later: '"' (config::load deletes it), '#' (config::load cuts there), '$',
// '`' and '\' (sysrc evaluates the file with sh when it reads it), or line
// breaks and other control characters.
//
// sysrc appends a new key with `echo >> file`, which would glue it onto a
// last line that lacks its newline (config::set adds one first; SetConf
// refuses instead), and it replaces the last line for a key while vm-bhyve
// reads the first. SetConf therefore reads the file back and fails if any
// value is not what vm-bhyve will now see.
func (d *Driver) SetConf(ctx context.Context, name string, kv ...string) error {
	path, err := d.confPath(name)
	if err != nil {
		return fmt.Errorf("set conf: %w", err)
	}
	want, err := checkPairs(kv)
	if err != nil {
		return fmt.Errorf("set conf of VM %s: %w", name, err)
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("set conf of VM %s: %w", name, err)
	}
	defer unlock()

	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		// sysrc would create it, and a stray NAME.conf makes a directory
		// look like a guest to datastore::get_guest.
		return fmt.Errorf("set conf of VM %s: %w: %w", name, ErrNotFound, err)
	}
	if err != nil {
		return fmt.Errorf("set conf of VM %s: %w", name, err)
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		return fmt.Errorf("set conf of VM %s: %s does not end with a newline, so sysrc would append to its last line; add the newline to the template's conf and snapshot it again", name, path)
	}

	args := append([]string{"-f", path}, kv...)
	if _, _, err := d.sysrc(ctx, args...); err != nil {
		return fmt.Errorf("set conf of VM %s: %w", name, err)
	}

	got, err := d.ReadConf(name)
	if err != nil {
		return fmt.Errorf("set conf of VM %s: read back: %w", name, err)
	}
	for _, pair := range kv {
		key, value, _ := strings.Cut(pair, "=")
		if got[key] != want[key] {
			return fmt.Errorf("set conf of VM %s: after sysrc, vm-bhyve would read %s=%q instead of %q (is %s set more than once in %s?)",
				name, key, got[key], value, key, path)
		}
	}
	return nil
}

func checkPairs(kv []string) (map[string]string, error) {
	if len(kv) == 0 {
		return nil, errors.New("no key=value pairs given")
	}
	want := map[string]string{}
	for _, pair := range kv {
		key, value, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value", pair)
		}
		if !confKey.MatchString(key) {
			return nil, fmt.Errorf("invalid key %q: want a-z, 0-9 and '_', starting with a letter", key)
		}
		if _, dup := want[key]; dup {
			return nil, fmt.Errorf("key %s given twice", key)
		}
		for _, r := range value {
			if r < 0x20 || r == 0x7f || strings.ContainsRune("\"#$`\\", r) {
				return nil, fmt.Errorf("value of %s contains %q, which sysrc or vm-bhyve would not keep as is", key, r)
			}
		}
		// config::load trims trailing spaces when it reads the value back.
		if strings.HasSuffix(value, " ") {
			return nil, fmt.Errorf("value of %s ends with a space, which vm-bhyve would drop", key)
		}
		want[key] = value
	}
	return want, nil
}
