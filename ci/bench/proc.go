package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of /proc/stat: USER_HZ, 100 on every Linux
// architecture Go supports (the kernel converts from its own HZ).
const userHZ = 100

// cpuStat is the first ("cpu") line of /proc/stat: the whole machine.
type cpuStat struct {
	Busy  uint64 // user + nice + system + irq + softirq + steal, in USER_HZ ticks
	Total uint64 // Busy + idle + iowait
}

// parseProcStat reads the aggregate cpu line of /proc/stat. guest and
// guest_nice are already counted in user and nice, so they are skipped.
func parseProcStat(data string) (cpuStat, error) {
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return cpuStat{}, fmt.Errorf("/proc/stat: short cpu line %q", line)
		}
		var v [8]uint64
		for i := 0; i < len(v) && i+1 < len(f); i++ {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return cpuStat{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
			}
			v[i] = n
		}
		user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
		busy := user + nice + system + irq + softirq + steal
		return cpuStat{Busy: busy, Total: busy + idle + iowait}, nil
	}
	return cpuStat{}, errors.New("/proc/stat: no aggregate cpu line")
}

func readProcStat() (cpuStat, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}, err
	}
	return parseProcStat(string(data))
}

// machineCPU is busy CPU time of the whole machine between two readings.
func machineCPU(before, after cpuStat) time.Duration {
	return time.Duration(float64(after.Busy-before.Busy) / userHZ * float64(time.Second))
}

// parseStatusKB returns a "Name:   1234 kB" field of /proc/PID/status in
// bytes, e.g. VmHWM (peak resident set) or VmRSS.
func parseStatusKB(status, name string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != name {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status field %s: unexpected %q", name, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status field %s: %w", name, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("status has no %s field", name)
}

// parseTimeMaxRSS reads the file GNU time writes with `-f %M`: the child's
// maximum resident set in KiB, on the last line (a "Command exited with
// non-zero status N" line may come first).
func parseTimeMaxRSS(data string) (int64, error) {
	lines := strings.Split(strings.TrimSpace(data), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	kb, err := strconv.ParseInt(last, 10, 64)
	if err != nil || kb < 0 {
		return 0, fmt.Errorf("GNU time output %q: not a maxrss in KiB", data)
	}
	return kb << 10, nil
}

// cpuUsage is user+system CPU time as getrusage reports it.
type cpuUsage struct{ User, Sys time.Duration }

func (c cpuUsage) Total() time.Duration { return c.User + c.Sys }

func (c cpuUsage) sub(o cpuUsage) cpuUsage {
	return cpuUsage{User: c.User - o.User, Sys: c.Sys - o.Sys}
}

func fromRusage(ru *syscall.Rusage) cpuUsage {
	tv := func(t syscall.Timeval) time.Duration {
		return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
	}
	return cpuUsage{User: tv(ru.Utime), Sys: tv(ru.Stime)}
}

// selfAndChildrenCPU is the CPU time of this process plus that of every
// child (and their descendants) it has waited for.
func selfAndChildrenCPU() (cpuUsage, error) {
	var self, children syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return cpuUsage{}, err
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children); err != nil {
		return cpuUsage{}, err
	}
	s, c := fromRusage(&self), fromRusage(&children)
	return cpuUsage{User: s.User + c.User, Sys: s.Sys + c.Sys}, nil
}
