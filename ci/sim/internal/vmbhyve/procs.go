package vmbhyve

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// proc is one process of this simulated host as pgrep -fl shows it.
type proc struct {
	pid  int
	args []string
}

func (p proc) cmdline() string { return strings.Join(p.args, " ") }

// lastField is awk's $NF of the cmdline.
func (p proc) lastField() string {
	f := strings.Fields(p.cmdline())
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// hostProcs lists the processes carrying this host's marker. pgrep on a real
// host sees every bhyve on the machine; a simulated host must only see its
// own, or parallel test hosts would see each other's guests.
func (v *vm) hostProcs(match func(cmdline string) bool) []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	marker := []byte(v.cfg.Marker())
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		p := proc{pid: pid, args: args}
		if !match(p.cmdline()) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !hasEnvEntry(env, marker) {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

func hasEnvEntry(environ, entry []byte) bool {
	for _, e := range bytes.Split(environ, []byte{0}) {
		if bytes.Equal(e, entry) {
			return true
		}
	}
	return false
}

var (
	bhyveRe  = regexp.MustCompile(`bhyve:`)
	loaderRe = regexp.MustCompile(`grub-bhyve|bhyveload`)
)

// running is the result of vm::running_load: "pid name" pairs of bhyve
// processes and of loaders.
type running struct {
	bhyve  []proc
	loader []proc
}

// runningLoad is vm::running_load (pgrep -fl "bhyve:" and
// pgrep -fl "grub-bhyve|bhyveload").
func (v *vm) runningLoad() running {
	return running{
		bhyve:  v.hostProcs(bhyveRe.MatchString),
		loader: v.hostProcs(loaderRe.MatchString),
	}
}

// check is vm::running_check: "Running (pid)", "Bootloader (pid)" or
// "Stopped" (1.7+: "Suspended" when NAME.save exists), matching the last
// field of each process line.
func (r running) check(v *vm, name string) (string, int, bool) {
	for _, p := range r.bhyve {
		if p.lastField() == name {
			return "Running (" + strconv.Itoa(p.pid) + ")", p.pid, true
		}
	}
	for _, p := range r.loader {
		if p.lastField() == name {
			return "Bootloader (" + strconv.Itoa(p.pid) + ")", p.pid, true
		}
	}
	if v.cfg.VersionAtLeast17() && v.hasSavedState(name) {
		return "Suspended", 0, false
	}
	return "Stopped", 0, false
}

// hasSavedState is vm::has_saved_state (1.7+).
func (v *vm) hasSavedState(name string) bool {
	_, err := os.Stat(filepath.Join(v.cfg.VMPath(name), name+".save"))
	return err == nil
}

// pgrepExact is `pgrep -fx "bhyve: NAME"`: the name is a regular expression,
// so "ci.1" also matches "ci-1", as on FreeBSD.
func (v *vm) pgrepExact(pattern string) []proc {
	re, err := regexp.Compile("^(?:" + pattern + ")$")
	if err != nil {
		return nil
	}
	return v.hostProcs(re.MatchString)
}

// loaderPids is `pgrep -fl "grub-bhyve|bhyveload" | grep " NAME$"`.
func (v *vm) loaderPids(name string) []proc {
	re, err := regexp.Compile(" " + name + "$")
	if err != nil {
		return nil
	}
	var out []proc
	for _, p := range v.hostProcs(loaderRe.MatchString) {
		if re.MatchString(strconv.Itoa(p.pid) + " " + p.cmdline()) {
			out = append(out, p)
		}
	}
	return out
}

// bhyveProc finds the bhyve process of exactly this guest, as bhyvectl
// --vm=NAME addresses a VM by its exact name.
func (v *vm) bhyveProc(name string) (proc, bool) {
	for _, p := range v.hostProcs(func(c string) bool { return c == "bhyve: "+name }) {
		return p, true
	}
	return proc{}, false
}

// vmmExists is `[ -e /dev/vmm/NAME ]`.
func (v *vm) vmmExists(name string) bool {
	_, err := os.Stat(v.cfg.VMMPath(name))
	return err == nil
}
