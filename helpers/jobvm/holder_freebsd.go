//go:build freebsd && (amd64 || arm64)

package jobvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// seesAllProcesses: root sees every process; anyone else only while
// security.bsd.see_other_uids and see_other_gids are 1 (security(7)), the
// defaults that hardening (bsdinstall's "hide processes") turns off.
var seesAllProcesses = func() (bool, string) {
	if unix.Geteuid() == 0 {
		return true, ""
	}
	for _, knob := range []string{"security.bsd.see_other_uids", "security.bsd.see_other_gids"} {
		v, err := unix.SysctlUint32(knob)
		if err != nil {
			return false, fmt.Sprintf("sysctl %s: %v", knob, err)
		}
		if v == 0 {
			return false, knob + "=0 hides other users' processes"
		}
	}
	return true, ""
}

// processStart reads the start time from the kernel's kinfo_proc: no ps(1),
// whose dates follow TZ and LC_TIME, and no fork per check.
func processStart(pid int) (string, error) {
	// Read the boot time on both sides of kinfo_proc: if a clock step moved
	// it in between, ki_start may have been computed with either value.
	for range 3 {
		before, err := unix.SysctlTimeval("kern.boottime")
		if err != nil {
			return "", fmt.Errorf("sysctl kern.boottime: %w", err)
		}
		kinfo, err := unix.SysctlRaw("kern.proc.pid", pid)
		if errors.Is(err, unix.ESRCH) {
			return "", errNoProcess
		}
		if err != nil {
			return "", fmt.Errorf("sysctl kern.proc.pid.%d: %w", pid, err)
		}
		after, err := unix.SysctlTimeval("kern.boottime")
		if err != nil {
			return "", fmt.Errorf("sysctl kern.boottime: %w", err)
		}
		if *before == *after {
			return processStartFromKinfo(kinfo, pid, before.Sec, before.Usec)
		}
	}
	return "", errors.New("kern.boottime kept changing (clock being stepped); try again")
}
