package host

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// Process is one live process belonging to a simulated host.
type Process struct {
	PID     int
	Cmdline string
}

// Resources is everything of a simulated host that lives outside its root
// directory: processes, network namespaces, network links and mounts.
type Resources struct {
	Processes []Process
	NetNS     []string
	Links     []string
	Mounts    []string
}

// Empty reports whether nothing is left.
func (r Resources) Empty() bool {
	return len(r.Processes) == 0 && len(r.NetNS) == 0 && len(r.Links) == 0 && len(r.Mounts) == 0
}

func (r Resources) String() string {
	var b strings.Builder
	for _, p := range r.Processes {
		fmt.Fprintf(&b, "process %d: %s\n", p.PID, p.Cmdline)
	}
	for _, n := range r.NetNS {
		fmt.Fprintf(&b, "netns %s\n", n)
	}
	for _, l := range r.Links {
		fmt.Fprintf(&b, "link %s\n", l)
	}
	for _, m := range r.Mounts {
		fmt.Fprintf(&b, "mount %s\n", m)
	}
	return b.String()
}

// Inventory lists the live resources of the host with this id and root. It
// works without the host's state file, so it also finds the remains of a
// crashed host.
func Inventory(id, root string) Resources {
	var r Resources
	ns := simstate.NetNSName(id)
	r.Processes = processes(id, ns)
	if out, err := exec.Command(mustTool("ip"), "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.Contains(f[0], id) {
				r.NetNS = append(r.NetNS, f[0])
			}
		}
	}
	r.Links = append(r.Links, links(nil, id)...)
	if netnsExists(ns) {
		for _, l := range links([]string{"-n", ns}, "") {
			r.Links = append(r.Links, ns+":"+l)
		}
	}
	if root != "" {
		if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				f := strings.Fields(l)
				if len(f) > 4 && (f[4] == root || strings.HasPrefix(f[4], root+"/")) {
					r.Mounts = append(r.Mounts, f[4])
				}
			}
		}
	}
	return r
}

func mustTool(name string) string {
	if p, ok := lookTool(name); ok {
		return p
	}
	return name
}

// links lists link names (in the namespace selected by nsArgs) containing
// substr, or all links except lo when substr is empty.
func links(nsArgs []string, substr string) []string {
	out, err := exec.Command(mustTool("ip"), append(nsArgs, "-j", "link", "show")...).Output()
	if err != nil {
		return nil
	}
	var ls []struct {
		Name string `json:"ifname"`
	}
	_ = json.Unmarshal(out, &ls)
	var names []string
	for _, l := range ls {
		if l.Name == "lo" {
			continue
		}
		if substr == "" || strings.Contains(l.Name, substr) {
			names = append(names, l.Name)
		}
	}
	sort.Strings(names)
	return names
}

// processes finds the host's processes: those carrying its marker in the
// environment (everything the simulator starts) and anything running inside
// its network namespace (e.g. an executor a test started there).
func processes(id, ns string) []Process {
	marker := []byte(simstate.MarkerEnv + "=" + id)
	var nsIno uint64
	if st, err := os.Stat(netnsPath(ns)); err == nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			nsIno = s.Ino
		}
	}
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		if zombie(dir) {
			continue
		}
		match := false
		if env, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
			for _, kv := range bytes.Split(env, []byte{0}) {
				if bytes.Equal(kv, marker) {
					match = true
					break
				}
			}
		}
		if !match && nsIno != 0 {
			if st, err := os.Stat(filepath.Join(dir, "ns", "net")); err == nil {
				if s, ok := st.Sys().(*syscall.Stat_t); ok && s.Ino == nsIno {
					match = true
				}
			}
		}
		if !match {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		out = append(out, Process{PID: pid, Cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))})
	}
	return out
}

func zombie(procDir string) bool {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] == 'Z' || s[i+2] == 'X'
}

// markerIDs lists the ids found in the environment of live processes.
func markerIDs() []string {
	seen := map[string]bool{}
	ents, _ := os.ReadDir("/proc")
	prefix := []byte(simstate.MarkerEnv + "=")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.HasPrefix(kv, prefix) {
				seen[string(kv[len(prefix):])] = true
			}
		}
	}
	var ids []string
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
