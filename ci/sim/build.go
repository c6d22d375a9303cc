package sim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns a bhyve-sim executable: $BHYVE_SIM_BINARY if set, else a
// build of ci/cmd/bhyve-sim made once per process (tests need the module
// source, which they have).
func Binary() (string, error) {
	if p := os.Getenv("BHYVE_SIM_BINARY"); p != "" {
		return p, nil
	}
	buildOnce.Do(func() { buildPath, buildErr = build() })
	return buildPath, buildErr
}

func build() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("sim: cannot locate the module source")
	}
	module := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	dir := filepath.Join(os.TempDir(), "bhyve-sim-build")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("sim: build directory: %w", err)
	}
	removeStaleBuilds(dir)
	out := filepath.Join(dir, "bhyve-sim-"+strconv.Itoa(os.Getpid()))
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(gobin, "build", "-o", out, "./ci/cmd/bhyve-sim")
	cmd.Dir = module
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("sim: go build ./ci/cmd/bhyve-sim: %w\n%s", err, b)
	}
	return out, nil
}

// removeStaleBuilds deletes binaries of test processes that are gone.
func removeStaleBuilds(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "bhyve-sim-"))
		if err != nil {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
