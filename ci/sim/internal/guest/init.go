package guest

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	leaseFile = "/run/bhyve-sim/lease"
	dhcpHook  = "/etc/bhyve-sim/udhcpc.script"
	sshdConf  = "/etc/ssh/sshd_config.bhyve-sim"
)

// MainInit is PID 1 of a guest. It builds the guest's root filesystem, waits
// for bhyve to hand over the NICs, "boots" (brings the NIC up with the MAC
// from NAME.conf, runs udhcpc against the host's Kea, starts sshd) and then
// behaves like init: reaps orphans and shuts down on an ACPI power-button
// press. Returning ends the guest: the kernel kills everything left in its
// PID namespace.
func MainInit() int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGCHLD)
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)

	var p InitParams
	if err := decode(&p); err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		return 70
	}
	g := &guestInit{p: p, events: os.NewFile(4, "events")}
	control := make(chan string, 8)
	go func() {
		s := bufio.NewScanner(os.NewFile(5, "control"))
		for s.Scan() {
			control <- s.Text()
		}
	}()
	if err := g.buildRoot(); err != nil {
		g.logf("building root filesystem: %v", err)
		return 70
	}
	if err := unix.Sethostname([]byte(p.Name)); err != nil {
		g.logf("sethostname: %v", err)
	}

	// Wait until bhyve has moved the NICs into our network namespace.
	goPipe := os.NewFile(3, "go")
	if _, err := bufio.NewReader(goPipe).ReadString('\n'); err != nil {
		g.logf("no go from bhyve: %v", err)
		return 70
	}
	goPipe.Close()

	// Early boot (firmware, loader, kernel): ACPI presses are lost here,
	// exactly the window in which real guests ignore `vm stop`.
	g.logf("booting")
	deadline := time.After(time.Duration(p.BootDelay))
boot:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGTERM {
				g.logf("ACPI power button pressed during early boot: ignored")
			}
		case <-deadline:
			break boot
		}
	}

	if err := g.network(); err != nil {
		g.logf("network: %v", err)
	}
	// From here on children are reaped by the loop below, so no more
	// exec.Cmd.Wait calls.
	if !p.NoDHCP && len(p.NICs) > 0 {
		g.spawn(p.Tools.Udhcpc, "-f", "-i", "vtnet0", "-s", dhcpHook,
			"-x", "hostname:"+p.Name, "-t", "10", "-T", "1", "-A", "1")
	}
	leaseWait := time.NewTicker(20 * time.Millisecond)
	defer leaseWait.Stop()
	var sshdAt <-chan time.Time
	if p.NoDHCP || len(p.NICs) == 0 {
		sshdAt = time.After(time.Duration(p.SSHDelay))
	}
	sshdStarted := false
	var shutdown <-chan time.Time
	var attacker attack
	defer attacker.stop()
	for {
		select {
		case c := <-control:
			attacker.apply(g, c)
		case <-attacker.tick():
			attacker.announce(g)
		case s := <-sigs:
			switch s {
			case syscall.SIGCHLD:
				reap()
			case syscall.SIGTERM:
				if shutdown == nil {
					g.logf("ACPI power button pressed: shutting down")
					shutdown = time.After(time.Duration(p.ShutdownDelay))
				}
			}
		case <-leaseWait.C:
			if b, err := os.ReadFile(leaseFile); err == nil {
				leaseWait.Stop()
				leased := strings.TrimSpace(string(b))
				if a, err := netip.ParseAddr(leased); err == nil {
					if err := announce("vtnet0", a); err != nil {
						g.logf("gratuitous ARP: %v", err)
					}
				}
				g.event("lease " + leased)
				sshdAt = time.After(time.Duration(p.SSHDelay))
			}
		case <-sshdAt:
			sshdAt = nil
			if p.NoSSHD || sshdStarted {
				continue
			}
			sshdStarted = true
			g.spawn(p.Tools.Sshd, "-D", "-e", "-f", sshdConf)
			g.event("sshd")
		case <-shutdown:
			// No DHCP release on the way down: everything dies by SIGKILL,
			// as when bhyve stops.
			g.logf("powering off")
			_ = syscall.Kill(-1, syscall.SIGKILL)
			if g.upperFD != nil && g.diskFD != nil {
				reap()
				if err := persist(fdPath(g.upperFD), fdPath(g.diskFD)); err != nil {
					g.logf("writing back to the disk: %v", err)
				}
			}
			return 0
		}
	}
}

type guestInit struct {
	p      InitParams
	events *os.File
	// upperFD and diskFD are the overlay's upper layer and the VM's disk,
	// held open across pivot_root for persist; nil unless the disk came
	// from an image.
	upperFD, diskFD *os.File
}

func (g *guestInit) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s: %s\n", time.Now().Format("15:04:05.000"), g.p.Name, fmt.Sprintf(format, args...))
}

func (g *guestInit) event(s string) {
	g.logf("%s", s)
	if g.events != nil {
		_, _ = fmt.Fprintln(g.events, s)
	}
}

// spawn starts a long-running guest process; the init loop reaps it.
func (g *guestInit) spawn(path string, args ...string) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		g.logf("start %s: %v", path, err)
		return
	}
	defer null.Close()
	attr := &os.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"},
		Files: []*os.File{null, os.Stdout, os.Stderr},
	}
	if _, err := os.StartProcess(path, append([]string{path}, args...), attr); err != nil {
		g.logf("start %s: %v", path, err)
	}
}

func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// network renames each NIC to vtnetN with the MAC bhyve gives it
// (network0_mac from NAME.conf) and brings it up.
func (g *guestInit) network() error {
	ipt := g.p.Tools.IP
	run := func(args ...string) error {
		out, err := exec.Command(ipt, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	// The simulated network is IPv4 only, like the Kea setup it mimics.
	for _, k := range []string{"all", "default"} {
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644)
	}
	if err := run("link", "set", "dev", "lo", "up"); err != nil {
		return err
	}
	for _, n := range g.p.NICs {
		name := fmt.Sprintf("vtnet%d", n.Num)
		if err := run("link", "set", "dev", n.Peer, "name", name); err != nil {
			return err
		}
		if n.MAC != "" {
			if err := run("link", "set", "dev", name, "address", n.MAC); err != nil {
				return err
			}
		}
		if err := run("link", "set", "dev", name, "up"); err != nil {
			return err
		}
	}
	return nil
}

// fdPath names an open directory through /proc, which reaches it after
// pivot_root has made its path unreachable. The trailing slash makes
// Lstat (and so filepath.WalkDir) follow the /proc link to the directory.
func fdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d/", f.Fd()) }
