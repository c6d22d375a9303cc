//go:build !linux && !(freebsd && (amd64 || arm64))

package jobvm

import (
	"fmt"
	"runtime"
)

var seesAllProcesses = func() (bool, string) {
	return false, "process visibility is not known on " + runtime.GOOS
}

// processStart has no implementation here: the holder check needs a process
// start time that reads the same in every process, and this platform's
// layout of it has not been written down (see holder_freebsd.go).
func processStart(int) (string, error) {
	return "", fmt.Errorf("identifying a process by its start time is not implemented on %s/%s (only linux and freebsd on amd64 or arm64)", runtime.GOOS, runtime.GOARCH)
}
