package vmbhyve

import (
	"os"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/sysrc"
)

// conf is a guest configuration as config::load (lib/vm-config) reads it:
// only lines starting with a lowercase letter, cut at '#', trailing spaces
// removed and every double quote deleted.
type conf struct{ lines []string }

func loadConf(path string) conf {
	b, err := os.ReadFile(path)
	if err != nil {
		return conf{}
	}
	var c conf
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] < 'a' || line[0] > 'z' {
			continue
		}
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimRight(line, " ")
		line = strings.ReplaceAll(line, `"`, "")
		c.lines = append(c.lines, line)
	}
	return c
}

// get is config::get: the FIRST line whose key matches wins (sysrc, which
// writes the file, edits the LAST one; with duplicates the two disagree,
// exactly as in vm-bhyve).
func (c conf) get(key, def string) (string, bool) {
	for _, l := range c.lines {
		k, val, _ := strings.Cut(l, "=")
		if k == key {
			return val, true
		}
	}
	return def, false
}

func (c conf) str(key, def string) string {
	v, _ := c.get(key, def)
	return v
}

// yesno is config::yesno on top of util::yesno: unset or empty is no,
// no/false/off/0 are no, anything else is yes.
func (c conf) yesno(key, def string) bool {
	return yesno(c.str(key, def))
}

func yesno(v string) bool {
	if v == "" {
		return false
	}
	switch strings.ToLower(v) {
	case "no", "false", "off", "0":
		return false
	}
	return true
}

// configSet is config::set: make sure the file ends with a newline (the
// `tail -1 | wc -l` check, which also turns an empty file into one blank
// line), then `sysrc -inqf FILE key=value`.
func (v *vm) configSet(name, key, value string) {
	path := v.cfg.ConfPath(name)
	b, _ := os.ReadFile(path)
	if len(b) == 0 || b[len(b)-1] != '\n' {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			_, _ = f.WriteString("\n")
			f.Close()
		}
	}
	_ = sysrc.Set([]string{path}, key, value)
}

// configRemove is config::remove (`sysrc -inxqf FILE key`).
func (v *vm) configRemove(name, key string) {
	_ = sysrc.Delete([]string{v.cfg.ConfPath(name)}, key)
}

// rcGet reads a variable from the simulated /etc/rc.conf (load_rc_config).
func (v *vm) rcGet(name string) string {
	val, _, _ := sysrc.Get([]string{v.cfg.RCConf()}, name)
	return val
}

// coreConf is config::core::load: $vm_dir/.config/system.conf.
func (v *vm) coreConf() conf { return loadConf(v.cfg.SystemConf()) }

// guestExists is datastore::get_guest for the default datastore: the guest
// exists when NAME/NAME.conf is a regular file.
func (v *vm) guestExists(name string) bool {
	if name == "" || strings.Contains(name, "/") {
		return false
	}
	st, err := os.Stat(v.cfg.ConfPath(name))
	return err == nil && st.Mode().IsRegular()
}
