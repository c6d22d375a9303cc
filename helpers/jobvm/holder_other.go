//go:build !linux

package jobvm

import (
	"os/exec"
	"strconv"
	"strings"
)

// processStart asks ps(1) for the start time; FreeBSD's ps and procps agree
// on -o lstart. One fork per VM is fine: holders are checked only by sweeps.
func processStart(pid int) (string, error) {
	out, err := exec.Command("ps", "-o", "lstart=", "-p", strconv.Itoa(pid)).Output()
	text := strings.Join(strings.Fields(string(out)), "_")
	if err != nil || text == "" {
		return "", errNoProcess
	}
	return text, nil
}
