package jobvm

import (
	"encoding/binary"
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
// holder is recorded as PID@START, START being the process's start time
// counted from boot as a decimal integer (clock ticks on Linux, microseconds
// on FreeBSD). It must come out the same in every process that checks it:
// `sweep --force` run by an operator with another TZ or LC_TIME than the
// service would otherwise see live jobs as orphans and destroy their VMs.
// Hence no rendered dates, and nothing relative to the wall clock, which NTP
// may step. Digits only also keep the marker inside the README's sudoers
// pattern for sysrc.
type Holder string

// CurrentHolder identifies process pid as a holder.
func CurrentHolder(pid int) (Holder, error) {
	start, err := processStart(pid)
	if err != nil {
		return "", fmt.Errorf("identify holder process %d: %w", pid, err)
	}
	return Holder(strconv.Itoa(pid) + "@" + start), nil
}

// Alive reports whether the holder process still runs. It fails when that
// cannot be told, and a caller must then treat the VM as held: a sweep that
// took "cannot see it" for "dead" would destroy a live job's VM. That is the
// case for an unreadable marker, a failed lookup, and a missing process when
// this process cannot see every user's processes (FreeBSD's
// security.bsd.see_other_uids=0, Linux's hidepid): there a live holder of
// another user looks exactly like a dead one.
func (h Holder) Alive() (bool, error) {
	pidText, start, ok := strings.Cut(string(h), "@")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil || pid <= 0 || start == "" {
		return false, fmt.Errorf("holder %q is not PID@START", string(h))
	}
	now, err := processStart(pid)
	if errors.Is(err, errNoProcess) {
		if all, why := seesAllProcesses(); !all {
			return false, fmt.Errorf("process %d is not visible, but %s: run this as root or as the runner's user", pid, why)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return now == start, nil
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

// struct kinfo_proc as FreeBSD's sysctl kern.proc.pid.PID returns it on the
// 64-bit little-endian platforms (amd64, arm64), from sys/sys/user.h:
// KINFO_PROC_SIZE is 1088 there (sys/amd64/include/proc.h,
// sys/arm64/include/proc.h), ki_structsize (int) is at 0, ki_pid (pid_t) at
// 72 after the int pair and eight pointers, and ki_start (struct timeval:
// time_t tv_sec, suseconds_t tv_usec, 8 bytes each) at 336, after the ids,
// four 16-byte sigset_t, 16 gid_t, six 8-byte sizes, two u_short, six
// 4-byte counters and the 8-byte ki_runtime.
const (
	kinfoProcSize    = 1088
	kinfoPIDOffset   = 72
	kinfoStartOffset = 336
)

// processStartFromKinfo turns FreeBSD's kinfo_proc for pid into its start
// time in microseconds since boot. The kernel reports ki_start as the
// process's start in uptime plus the boot time (fill_kinfo_proc_only in
// sys/kern/kern_proc.c: p_start, then timevaladd of getboottime), and a
// clock step moves the boot time (tc_setclock in sys/kern/kern_tc.c), so
// the boot time the caller read from kern.boottime is taken off again.
// An empty answer means no such process.
func processStartFromKinfo(kinfo []byte, pid int, bootSec, bootUsec int64) (string, error) {
	if len(kinfo) == 0 {
		return "", errNoProcess
	}
	if len(kinfo) < kinfoProcSize {
		return "", fmt.Errorf("kinfo_proc of %d bytes, expected %d", len(kinfo), kinfoProcSize)
	}
	le := binary.LittleEndian
	if size := int32(le.Uint32(kinfo[0:])); size != kinfoProcSize {
		return "", fmt.Errorf("kinfo_proc ki_structsize %d, expected %d (unknown layout)", size, kinfoProcSize)
	}
	if got := int32(le.Uint32(kinfo[kinfoPIDOffset:])); int(got) != pid {
		return "", fmt.Errorf("kinfo_proc is for pid %d, expected %d", got, pid)
	}
	sec := int64(le.Uint64(kinfo[kinfoStartOffset:]))
	usec := int64(le.Uint64(kinfo[kinfoStartOffset+8:]))
	sinceBoot := (sec-bootSec)*1_000_000 + (usec - bootUsec)
	if sinceBoot < 0 {
		return "", fmt.Errorf("kinfo_proc ki_start %d.%06d is before kern.boottime %d.%06d", sec, usec, bootSec, bootUsec)
	}
	return strconv.FormatInt(sinceBoot, 10), nil
}
