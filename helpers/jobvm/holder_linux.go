package jobvm

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// seesAllProcesses: root sees every process in /proc; anyone else only if
// /proc is not mounted with hidepid (proc(5)).
var seesAllProcesses = func() (bool, string) {
	if os.Geteuid() == 0 {
		return true, ""
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false, "the /proc mount options cannot be read"
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "/proc" && f[2] == "proc" && strings.Contains(f[3], "hidepid=") && !strings.Contains(f[3], "hidepid=0") && !strings.Contains(f[3], "hidepid=off") {
			return false, "/proc is mounted with " + f[3] + " (other users' processes are hidden)"
		}
	}
	return true, ""
}

func processStart(pid int) (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return "", errNoProcess
	}
	if err != nil {
		return "", err
	}
	return processStartFromStat(string(data))
}
