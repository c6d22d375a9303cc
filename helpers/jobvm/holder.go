package jobvm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Holder is the process that answers for a VM while a job uses it: the
// gitlab-runner process itself for the native executor, the gitlab-runner
// process that drives bhyve-executor for the Custom executor. A VM whose
// holder is gone belongs to no job and is an orphan.
//
// A PID alone is not enough after months of uptime: PIDs are reused. The
// holder is recorded as PID plus the process's start time, and a process
// only counts as the holder if both still match.
type Holder string

// CurrentHolder identifies process pid as a holder.
func CurrentHolder(pid int) (Holder, error) {
	start, err := processStart(pid)
	if err != nil {
		return "", fmt.Errorf("identify holder process %d: %w", pid, err)
	}
	return Holder(strconv.Itoa(pid) + "@" + start), nil
}

// Alive reports whether the holder process still runs.
func (h Holder) Alive() bool {
	pidText, start, ok := strings.Cut(string(h), "@")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	now, err := processStart(pid)
	if err != nil {
		return false
	}
	return now == start
}

var errNoProcess = errors.New("no such process")

// processStartFromStat extracts the start time (field 22, clock ticks since
// boot) from a Linux /proc/PID/stat line. The command name in field 2 may
// contain spaces and parentheses, so fields are counted after the last ')'.
func processStartFromStat(stat string) (string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", fmt.Errorf("unexpected /proc stat format %q", stat)
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3 (state); the start time is field 22.
	if len(fields) < 20 {
		return "", fmt.Errorf("unexpected /proc stat format %q", stat)
	}
	return fields[19], nil
}
