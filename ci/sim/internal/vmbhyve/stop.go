package vmbhyve

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// stop is core::stop: an ACPI power-button press (SIGTERM to bhyve, one
// second, SIGTERM again) and nothing more. It always exits 0; the guest may
// take its time or ignore it entirely.
func (v *vm) stop(args []string) error {
	if len(args) == 0 || args[0] == "" {
		return v.usage()
	}
	for _, name := range args {
		if name == "" {
			break
		}
		if !v.vmmExists(name) {
			v.warnf("%s doesn't appear to be a running virtual machine", name)
			continue
		}
		if bad, _ := v.failing("stop", name); bad {
			v.warnf("unable to locate process id for %s", name)
			continue
		}
		pids := v.pgrepExact("bhyve: " + name)
		loaders := v.loaderPids(name)
		switch {
		case len(pids) > 0:
			v.out("Sending ACPI shutdown to %s", name)
			// `kill "$_pid"` gets all matches as ONE argument: with more than
			// one (a regex-y name) kill fails and nothing is signalled.
			v.killAll(pids, syscall.SIGTERM)
			time.Sleep(time.Second)
			v.killAll(pids, syscall.SIGTERM)
			// 1.7+ then runs `core::discard -f NAME`, a no-op without a
			// saved state.
		case len(loaders) > 0:
			if v.confirm("Guest " + name + " is in bootloader stage, do you wish to force exit") {
				v.out("Killing %s", name)
				v.killAll(loaders, syscall.SIGTERM)
				_ = os.Remove(v.cfg.VMMPath(name))
			}
		default:
			v.warnf("unable to locate process id for %s", name)
		}
	}
	return nil
}

func (v *vm) killAll(ps []proc, sig syscall.Signal) {
	if len(ps) != 1 {
		return
	}
	_ = syscall.Kill(ps[0].pid, sig)
}

// poweroff is core::poweroff: `bhyvectl --force-poweroff --vm=NAME` after an
// optional confirmation (EOF answers yes). 1.8-devel also destroys the vmm.
func (v *vm) poweroff(args []string) error {
	force, _, rest, err := v.parseArgs(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 || rest[0] == "" {
		return v.usage()
	}
	name := rest[0]
	if !v.vmmExists(name) {
		return v.errf("%s doesn't appear to be a running virtual machine", name)
	}
	if !force && !v.confirm("Are you sure you want to forcefully poweroff this virtual machine") {
		return nil
	}
	return v.bhyvectlPoweroff(name)
}

// bhyvectlPoweroff stands in for bhyvectl --force-poweroff: the bhyve
// process gets SIGUSR1 and kills the guest at once. In the loader stage
// there is no bhyve yet and nothing happens (vm-bhyve#466).
func (v *vm) bhyvectlPoweroff(name string) error {
	if bad, msg := v.failing("poweroff", name); bad {
		if msg == "" {
			msg = fmt.Sprintf("vm_open: %s could not be opened: No such file or directory", name)
		}
		fmt.Fprintln(v.stderr, msg)
		return exitStatus(1)
	}
	if p, ok := v.bhyveProc(name); ok {
		if err := syscall.Kill(p.pid, syscall.SIGUSR1); err != nil {
			fmt.Fprintf(v.stderr, "vm_suspend: %v\n", err)
			return exitStatus(1)
		}
	}
	if v.cfg.VersionMode == simstate.Version18 {
		// bhyvectl --destroy: waits for bhyve to let go of the VM.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok := v.bhyveProc(name); !ok {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = os.Remove(v.cfg.VMMPath(name))
	}
	return nil
}
