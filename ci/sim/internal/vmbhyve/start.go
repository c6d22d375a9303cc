package vmbhyve

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// start is core::start: each guest in turn, "Waiting N second(s)" between
// them. 1.6 exits 0 even when a guest failed (freebsd/vm-bhyve#6); 1.7+
// exits with the number of guests that failed.
func (v *vm) start(args []string) error {
	foreground, _, rest, err := v.parseArgs(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 || rest[0] == "" {
		return v.usage()
	}
	if len(rest) >= 2 {
		foreground = false
	}
	delay := 2
	if d, err := strconv.Atoi(v.rcGet("vm_delay")); err == nil {
		delay = d
	}
	failed := 0
	for i, name := range rest {
		if i > 0 {
			v.out("Waiting %d second(s)", delay)
			time.Sleep(time.Duration(delay) * time.Second)
		}
		if v.startOne(name, foreground) != nil {
			failed++
		}
	}
	if v.cfg.VersionAtLeast17() && failed > 0 {
		return exitStatus(failed)
	}
	return nil
}

// startOne is core::__start. Failures are "  ! msg" on stdout, never
// util::err, and the guest boots in a background `$0 _run NAME` that this
// command does not wait for.
func (v *vm) startOne(name string, foreground bool) error {
	fail := func(msg string) error {
		v.out("  ! %s", msg)
		return exitStatus(1)
	}
	v.out("Starting %s", name)
	if !v.guestExists(name) {
		return fail(name + " does not seem to be a valid virtual machine")
	}
	v.out("  * found guest in %s", v.cfg.VMPath(name))
	if !v.quiet(func() bool { return v.confirmStopped(name, true) }) {
		return fail("guest appears to be running already")
	}
	c := loadConf(v.cfg.ConfPath(name))
	if c.str("cpu", "") == "" || c.str("memory", "") == "" {
		return fail("incomplete virtual machine configuration")
	}
	if c.str("loader", "") == "grub" {
		return fail("grub requested but sysutils/grub2-bhyve not installed?")
	}
	if bad, msg := v.failing("start", name); bad {
		if msg == "" {
			msg = "incomplete virtual machine configuration"
		}
		return fail(msg)
	}
	v.out("  * booting...")

	self := v.argv0
	if !filepath.IsAbs(self) {
		self = v.cfg.VMCommand()
	}
	if foreground {
		// `$0 _run -f NAME`: com1 on stdio, blocks until the guest stops.
		cmd := exec.Command(self, "_run", "-f", name, "")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, v.stdout, v.stderr
		cmd.Env = append(os.Environ(), v.cfg.Marker())
		_ = cmd.Run()
		return nil
	}
	// `$0 _run NAME "" >/dev/null 2>&1 &` from a non-interactive sh: the
	// child stays in the caller's process group, with SIGINT and SIGQUIT
	// ignored and stdin from /dev/null. Killing the caller's process group
	// with SIGTERM or SIGKILL therefore takes the guest down, as on FreeBSD.
	// Dispositions are inherited at fork: ignore just around the start.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	cmd := exec.Command(self, "_run", name, "")
	cmd.Env = append(os.Environ(), v.cfg.Marker())
	err := cmd.Start()
	signal.Reset(syscall.SIGINT, syscall.SIGQUIT)
	if err != nil {
		v.out("  ! %v", err)
		return exitStatus(1)
	}
	_ = cmd.Process.Release()
	return nil
}
