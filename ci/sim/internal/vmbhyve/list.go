package vmbhyve

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// guests is `ls -1 $VM_DS_PATH` filtered to directories holding NAME.conf,
// in ls's (byte) order. Only the default datastore exists on a simulated
// host.
func (v *vm) guests() []string {
	ents, err := os.ReadDir(v.cfg.VMDir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue
		}
		if _, err := os.Stat(v.cfg.ConfPath(n)); err != nil {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// firstLine is `head -n1 FILE`.
func firstLine(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if s.Scan() {
		return s.Text(), true
	}
	return "", true
}

// list is core::list: printf "%s^%s^..." rows piped through `column -ts^`.
func (v *vm) list(args []string) error {
	opts, _, bad := v.getopts(args, "rv")
	if bad {
		return v.usage()
	}
	runningOnly, verbose := opts['r'], opts['v']
	tags := v.cfg.VersionMode == simstate.Version18

	run := v.runningLoad()
	vmList := strings.Fields(v.rcGet("vm_list"))

	var lines []string
	row := func(fields ...string) { lines = append(lines, strings.Join(fields, "^")) }
	header := []string{"NAME", "DATASTORE", "LOADER", "CPU", "MEMORY", "VNC", "AUTO"}
	if verbose {
		header = append(header, fmt.Sprintf("%5s", "%CPU"), fmt.Sprintf("%8s", "RSZ"), fmt.Sprintf("%14s", "UPTIME"))
	}
	header = append(header, "STATE")
	if tags {
		header = append(header, "TAGS")
	}
	row(header...)

	for _, name := range v.guests() {
		c := loadConf(v.cfg.ConfPath(name))
		loader := c.str("loader", "none")
		cpu := c.str("cpu", "")
		memory := c.str("memory", "")
		tagList := "-"
		if tags {
			if t := strings.Fields(c.str("tags", "-")); len(t) > 0 {
				tagList = strings.Join(t, ",")
			}
		}
		vnc, pcpu, rss, uptime := "-", "-", "-", "-"
		state, pid, isRunning := run.check(v, name)
		lockPath := filepath.Join(v.cfg.VMPath(name), "run.lock")
		lockHost, locked := firstLine(lockPath)
		if isRunning || locked && lockHost == v.host {
			if c.yesno("graphics", "") {
				vnc = v.consoleVNC(name)
			}
		}
		if pid != 0 && verbose {
			pcpu, rss, uptime = psStats(pid)
		}
		auto := "No"
		for i, n := range vmList {
			if n == name {
				auto = fmt.Sprintf("Yes [%d]", i+1)
			}
		}
		if state == "Stopped" && locked {
			state = "Locked (" + lockHost + ")"
		}
		if runningOnly && (state == "Stopped" || state == "Suspended") {
			continue
		}
		fields := []string{name, "default", loader, cpu, memory, vnc, auto}
		if verbose {
			fields = append(fields, fmt.Sprintf("%5s", pcpu), fmt.Sprintf("%8s", rss), fmt.Sprintf("%14s", uptime))
		}
		fields = append(fields, state)
		if tags {
			fields = append(fields, tagList)
		}
		row(fields...)
	}
	fmt.Fprint(v.stdout, columnT(lines, "^"))
	return nil
}

// consoleVNC is `grep vnc NAME/console | cut -d= -f2` (1.7 anchors ^vnc).
func (v *vm) consoleVNC(name string) string {
	b, err := os.ReadFile(filepath.Join(v.cfg.VMPath(name), "console"))
	if err != nil {
		return "-"
	}
	for _, l := range strings.Split(string(b), "\n") {
		ok := strings.Contains(l, "vnc")
		if v.cfg.VersionAtLeast17() {
			ok = strings.HasPrefix(l, "vnc")
		}
		if ok {
			parts := strings.Split(l, "=")
			if len(parts) > 1 && parts[1] != "" {
				return parts[1]
			}
			return "-"
		}
	}
	return "-"
}

// psStats is `ps -o%cpu= -orss= -oetime= -p PID` as core::list formats it:
// RSZ through info::__bytes_human (KiB, one decimal) and the etime's day
// dash turned into "d ".
func psStats(pid int) (pcpu, rss, uptime string) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "-", "-", "-"
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "-", "-", "-"
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return "-", "-", "-"
	}
	const hz = 100
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	startTicks, _ := strconv.ParseFloat(f[19], 64)
	rssPages, _ := strconv.ParseInt(f[21], 10, 64)
	upB, _ := os.ReadFile("/proc/uptime")
	var sysUp float64
	fmt.Sscanf(string(upB), "%f", &sysUp)
	elapsed := sysUp - startTicks/hz
	if elapsed <= 0 {
		elapsed = 0.01
	}
	pcpu = fmt.Sprintf("%.1f", (utime+stime)/hz/elapsed*100)
	rss = bytesHuman(float64(rssPages*int64(os.Getpagesize())/1024), 1, 2)
	uptime = strings.Replace(etime(time.Duration(elapsed*float64(time.Second))), "-", "d ", 1)
	return pcpu, rss, uptime
}

// etime is ps's elapsed time format [[dd-]hh:]mm:ss.
func etime(d time.Duration) string {
	s := int(d.Seconds())
	days, s := s/86400, s%86400
	h, s := s/3600, s%3600
	m, s := s/60, s%60
	switch {
	case days > 0:
		return fmt.Sprintf("%d-%02d:%02d:%02d", days, h, m, s)
	case h > 0:
		return fmt.Sprintf("%02d:%02d:%02d", h, m, s)
	default:
		return fmt.Sprintf("%02d:%02d", m, s)
	}
}

// bytesHuman is info::__bytes_human: divide by 1024 with bc's scale=3
// truncation until below 1024, then printf with dec decimals.
func bytesHuman(val float64, dec, num int) string {
	for val >= 1024 && num < 5 {
		val = float64(int64(val/1024*1000)) / 1000
		num++
	}
	ext := map[int]string{1: "B", 2: "K", 3: "M", 4: "G", 5: "T"}[num]
	return fmt.Sprintf("%.*f%s", dec, val, ext)
}
