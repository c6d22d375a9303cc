package host

import (
	"fmt"
	"os"
	"path/filepath"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// SetFault stores the knobs of one VM or template name (outside the VM
// tree, so knobs set on a template after it was snapshotted still reach new
// clones). A RunLock knob on an existing, stopped VM takes effect at once.
func SetFault(cfg *simstate.Config, name string, f simstate.Fault) error {
	switch f.Fail {
	case "", "clone", "clone-rename", "start", "_run", "stop", "poweroff", "destroy":
	default:
		return fmt.Errorf("fault for %s: cannot make %q fail (clone, clone-rename, start, _run, stop, poweroff, destroy)", name, f.Fail)
	}
	if err := cfg.StoreFault(name, f); err != nil {
		return err
	}
	content, ok := f.LockContent(cfg.HostName)
	if !ok {
		return nil
	}
	if _, err := os.Stat(cfg.ConfPath(name)); err != nil {
		return nil
	}
	if _, err := os.Stat(cfg.VMMPath(name)); err == nil {
		return nil
	}
	if err := os.WriteFile(filepath.Join(cfg.VMPath(name), "run.lock"), []byte(content), 0o644); err != nil {
		return fmt.Errorf("write run.lock of %s: %w", name, err)
	}
	return nil
}
