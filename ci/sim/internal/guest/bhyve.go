package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// Exit codes of bhyve(8) that vm::handle_exit distinguishes.
const (
	exitPoweroff = 1
	exitError    = 4
)

// MainBhyve is the "bhyve: NAME" process. Like bhyve it turns SIGTERM into
// an ACPI power-button press for the guest and exits with 1 once the guest
// has powered off. A force poweroff (bhyvectl --force-poweroff, signalled
// here as SIGUSR1) stops the guest at once. It returns the exit status.
func MainBhyve() int {
	// Fork the guest from a thread that never exits: Pdeathsig is tied to
	// the forking thread, and the guest must die with bhyve, not before.
	runtime.LockOSThread()
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1)

	var p BhyveParams
	if err := decode(&p); err != nil {
		fmt.Fprintln(os.Stderr, "bhyve:", err)
		return exitError
	}
	cfg, err := simstate.Load(p.Root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bhyve:", err)
		return exitError
	}
	console := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s bhyve: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}

	// vm_create: the VM's /dev/vmm entry exists while bhyve runs (and after,
	// until _run's bhyvectl --destroy).
	if f, err := os.OpenFile(cfg.VMMPath(p.Name), os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		f.Close()
	}
	fault, err := cfg.EffectiveFault(p.Lineage)
	if err != nil {
		console("%v", err)
	}

	guestDir := filepath.Join(cfg.GuestsDir(), p.Name+"."+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(guestDir, 0o700); err != nil {
		console("create guest directory: %v", err)
		return exitError
	}
	defer os.RemoveAll(guestDir)

	ip := InitParams{
		Name:          p.Name,
		DiskDir:       p.DiskDir,
		GuestDir:      guestDir,
		NICs:          p.NICs,
		SSHUser:       cfg.SSHUser,
		Tools:         cfg.Tools,
		BootDelay:     fault.BootDelay,
		SSHDelay:      fault.SSHDelay,
		ShutdownDelay: fault.ShutdownDelay,
		NoDHCP:        fault.NoDHCP,
		NoSSHD:        fault.NoSSHD,
	}
	if ip.ShutdownDelay == 0 {
		ip.ShutdownDelay = DefaultShutdownDelay
	}
	if fault.RecordSessions {
		dir := cfg.SessionDir(p.Name)
		// Sessions run as the guest user; the directory outlives the guest
		// so a test reads it afterwards.
		if err := os.MkdirAll(dir, 0o755); err == nil && os.Chmod(dir, 0o1777) == nil {
			ip.RecordDir = dir
		}
	}
	env, err := Env(RoleInit, ip)
	if err != nil {
		console("%v", err)
		return exitError
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		console("pipe: %v", err)
		return exitError
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		console("pipe: %v", err)
		return exitError
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		console("pipe: %v", err)
		return exitError
	}
	cmd := &exec.Cmd{
		Path:       cfg.Binary,
		Args:       []string{"guest-init", p.Name},
		Env:        childEnv(env...),
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{goR, evW, ctlR},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWUTS |
				unix.CLONE_NEWPID | unix.CLONE_NEWIPC,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		console("start guest: %v", err)
		return exitError
	}
	goR.Close()
	evW.Close()
	ctlR.Close()
	defer ctlW.Close()
	pid := cmd.Process.Pid
	console("guest %s started (init pid %d)", p.Name, pid)

	// Hand the guest its NICs: the guest side of each tap moves into the
	// guest's network namespace.
	for _, n := range p.NICs {
		out, err := exec.Command(cfg.Tools.IP, "-n", cfg.NetNS, "link", "set", "dev", n.Peer, "netns", strconv.Itoa(pid)).CombinedOutput()
		if err != nil {
			console("attach %s: %v: %s", n.Peer, err, strings.TrimSpace(string(out)))
		}
	}
	_, _ = goW.Write([]byte("go\n"))
	goW.Close()

	go func() {
		s := bufio.NewScanner(evR)
		for s.Scan() {
			line := s.Text()
			console("guest: %s", line)
			if strings.HasPrefix(line, "lease ") {
				if f, _ := cfg.EffectiveFault(p.Lineage); f.LFCOnLease {
					runLFC(cfg, console)
				}
			}
		}
	}()

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Knobs that turn a running guest into an attacker are re-read while
	// it runs and handed to its init, which acts inside the guest.
	attack := time.NewTicker(50 * time.Millisecond)
	defer attack.Stop()
	var stealIP, stealMAC string
	forced := false
	for {
		select {
		case <-attack.C:
			f, _ := cfg.EffectiveFault(p.Lineage)
			if f.StealMAC != stealMAC {
				stealMAC = f.StealMAC
				_, _ = fmt.Fprintf(ctlW, "steal-mac %s\n", stealMAC)
			}
			if f.StealIP != stealIP {
				stealIP = f.StealIP
				_, _ = fmt.Fprintf(ctlW, "steal-ip %s\n", stealIP)
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM:
				// Re-read the knobs: "ACPI ignored" may be switched on a
				// running guest.
				f, _ := cfg.EffectiveFault(p.Lineage)
				if f.IgnoreACPI {
					console("ACPI power button pressed; guest ignores it")
					continue
				}
				console("ACPI power button pressed")
				_ = syscall.Kill(pid, syscall.SIGTERM)
			case syscall.SIGUSR1:
				console("forced poweroff")
				forced = true
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		case err := <-done:
			var ee *exec.ExitError
			switch {
			case err == nil, forced:
				console("guest powered off")
				return exitPoweroff
			case errors.As(err, &ee):
				console("guest failed: %v", err)
				return exitError
			default:
				console("guest failed: %v", err)
				return exitError
			}
		}
	}
}

// runLFC asks the simulator to run Kea's lease file cleanup, detached so a
// slow cleanup never holds the guest up.
func runLFC(cfg *simstate.Config, console func(string, ...any)) {
	cmd := exec.Command(cfg.Binary, "--root", cfg.Root, "lfc")
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		console("lfc: %v", err)
		return
	}
	go func() {
		if err := cmd.Wait(); err != nil {
			console("lfc: %v", err)
		}
	}()
}

// MainBhyveload stands in for bhyveload(8): it creates the VM (/dev/vmm)
// and takes a while, so `vm list` shows "Bootloader (pid)".
func MainBhyveload() int {
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	var p LoaderParams
	if err := decode(&p); err != nil {
		fmt.Fprintln(os.Stderr, "bhyveload:", err)
		return 1
	}
	cfg, err := simstate.Load(p.Root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bhyveload:", err)
		return 1
	}
	if f, err := os.OpenFile(cfg.VMMPath(p.Name), os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		f.Close()
	}
	fmt.Fprintf(os.Stderr, "%s bhyveload: loading %s\n", time.Now().Format("15:04:05.000"), p.Name)
	time.Sleep(time.Duration(p.Delay))
	if p.Fail {
		fmt.Fprintln(os.Stderr, "bhyveload: can't load kernel")
		return 1
	}
	return 0
}
