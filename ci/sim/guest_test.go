package sim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// sshRun runs one command on a guest with golang.org/x/crypto/ssh, pinning
// the template's host key, through the host namespace.
func sshRun(ctx context.Context, h *sim.Host, addr netip.Addr, command string) (string, error) {
	signer, err := h.Signer()
	if err != nil {
		return "", err
	}
	key := h.HostKey()
	cc := &ssh.ClientConfig{
		User:              h.SSHUser(),
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   ssh.FixedHostKey(key),
		HostKeyAlgorithms: []string{key.Type()},
		Timeout:           10 * time.Second,
	}
	hostPort := netip.AddrPortFrom(addr, 22).String()
	conn, err := h.DialContext(ctx, "tcp", hostPort)
	if err != nil {
		return "", err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, hostPort, cc)
	if err != nil {
		conn.Close()
		return "", err
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	// Separate buffers: bytes.Buffer's ReadFrom is not safe for the two
	// copy goroutines x/crypto runs for stdout and stderr.
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(command)
	return out.String() + errb.String(), err
}

// waitSSH retries until sshd answers (a lease appears before sshd listens,
// as on a real guest).
func waitSSH(t *testing.T, ctx context.Context, h *sim.Host, name string, addr netip.Addr, command string) string {
	t.Helper()
	for {
		out, err := sshRun(ctx, h, addr, command)
		if err == nil {
			return out
		}
		var ke *ssh.ExitError
		if errors.As(err, &ke) || strings.Contains(err.Error(), "host key mismatch") {
			t.Fatalf("ssh %s: %v\n%s", name, err, out)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ssh to %s (%s) never worked: %v\nconsole:\n%s", name, addr, err, readFile(h.GuestLog(name)))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestGuestBoots follows the executor's path on a fresh clone: pre-assign
// the MAC with sysrc, start, find the lease by MAC in Kea's file, SSH in with
// the pinned host key, stop, destroy.
func TestGuestBoots(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})
	vmc := h.VMCommand()
	const name, mac = "job-1", "58:9c:fc:0a:bc:de"
	mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), name)

	r, err := h.Sysrc(ctx, "-f", h.ConfPath(name), "network0_mac="+mac, "bhyve_ci_owner=runner-1")
	if err != nil || r.ExitCode != 0 || r.Stdout != "network0_mac:  -> "+mac+"\nbhyve_ci_owner:  -> runner-1\n" {
		t.Fatalf("sysrc: %v %s", err, r)
	}

	start := time.Now()
	r = mustVM(t, ctx, h, "start", name)
	if r.Stdout != "Starting "+name+"\n  * found guest in "+h.VMDir()+"/"+name+"\n  * booting...\n" || r.Stderr != "" {
		t.Fatalf("vm start: %s", r)
	}
	addr, err := h.WaitLease(ctx, mac)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, readFile(h.GuestLog(name)))
	}
	if !h.Subnet().Contains(addr) {
		t.Errorf("lease %s outside %s", addr, h.Subnet())
	}
	rows, err := sim.ReadLeaseFile(h.LeaseFile())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range rows {
		found = found || l.HWAddr == mac && l.Address == addr
	}
	if !found {
		t.Errorf("lease of %s not in %s:\n%s", mac, h.LeaseFile(), readFile(h.LeaseFile()))
	}

	out := waitSSH(t, ctx, h, name, addr, "hostname; id -un; test -w /builds && echo builds-writable; pwd")
	t.Logf("SSH-ready %v after vm start", time.Since(start).Round(time.Millisecond))
	if want := name + "\n" + h.SSHUser() + "\nbuilds-writable\n/home/" + h.SSHUser() + "\n"; out != want {
		t.Errorf("guest says %q, want %q", out, want)
	}

	// run.lock and uuid exist while running; the conf keeps the MAC we set.
	if got := readFile(filepath.Join(h.VMDir(), name, "run.lock")); got != h.HostName()+"\n" {
		t.Errorf("run.lock = %q", got)
	}
	conf := readFile(h.ConfPath(name))
	if !regexp.MustCompile(`(?m)^uuid="[0-9a-f-]{36}"$`).MatchString(conf) ||
		strings.Count(conf, "network0_mac=") != 1 || !strings.Contains(conf, `network0_mac="`+mac+`"`) {
		t.Errorf("conf after first start:\n%s", conf)
	}

	t.Run("real ssh client with known_hosts", func(t *testing.T) {
		for _, extra := range [][]string{nil, {"-o", "HostKeyAlias=" + h.Template()}} {
			args := append([]string{"-i", h.SSHKeyPath(), "-o", "UserKnownHostsFile=" + h.KnownHostsPath(),
				"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null"}, extra...)
			args = append(args, h.SSHUser()+"@"+addr.String(), "hostname")
			out, err := h.Command(ctx, "ssh", args...).CombinedOutput()
			if err != nil || string(out) != name+"\n" {
				t.Errorf("ssh %v: %v\n%s", extra, err, out)
			}
		}
	})

	t.Run("stop is asynchronous ACPI", func(t *testing.T) {
		r := mustVM(t, ctx, h, "stop", name)
		if r.Stdout != "Sending ACPI shutdown to "+name+"\n" || r.Stderr != "" {
			t.Errorf("vm stop: %s", r)
		}
		waitState(t, ctx, h, name, "Stopped")
		// vm::unlock removes run.lock, then console.
		waitNoSupervisor(t, ctx, h, name)
		if fileExists(filepath.Join(h.VMDir(), name, "run.lock")) || fileExists(filepath.Join(h.VMDir(), name, "console")) {
			t.Error("run.lock or console left after a clean stop")
		}
		log := readFile(h.VMLog(name))
		for _, want := range []string{"generated static mac", "starting bhyve (run 1)", "bhyve exited with status 1", "stopped"} {
			if strings.Contains(log, want) != (want != "generated static mac") {
				t.Errorf("vm-bhyve.log: %q present=%v:\n%s", want, !strings.Contains(log, want), log)
			}
		}
		// No DHCP release: the lease is still active in Kea's file.
		if _, ok, _ := h.Lease(mac); !ok {
			t.Error("lease released on stop")
		}
	})

	t.Run("destroy", func(t *testing.T) {
		r := mustVM(t, ctx, h, "destroy", "-f", name)
		if r.Stdout != "" || r.Stderr != "" {
			t.Errorf("destroy: %s", r)
		}
		if fileExists(filepath.Join(h.VMDir(), name)) {
			t.Error("directory left")
		}
		r = vm(t, ctx, h, "destroy", "-f", name)
		if r.ExitCode != 1 || r.Stderr != vmc+": ERROR: "+name+" doesn't appear to be a valid virtual machine\n" {
			t.Errorf("second destroy: %s", r)
		}
	})
}

// TestFirstStartWritesIdentity: a clone without MAC gets uuid and a
// 58:9c:fc:0X:XX:XX MAC from _run on first start, before run.lock appears,
// and keeps them on later starts.
func TestFirstStartWritesIdentity(t *testing.T) {
	for _, mode := range []string{sim.Version16, sim.Version17} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 90*time.Second)
			h := sim.New(t, sim.Options{VersionMode: mode})
			const name = "auto-1"
			mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), name)
			mustVM(t, ctx, h, "start", name)
			lock := filepath.Join(h.VMDir(), name, "run.lock")
			for !fileExists(lock) {
				select {
				case <-ctx.Done():
					t.Fatal("run.lock never appeared")
				case <-time.After(10 * time.Millisecond):
				}
			}
			conf := readFile(h.ConfPath(name))
			m := regexp.MustCompile(`(?m)^network0_mac="(58:9c:fc:0[0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2})"$`).FindStringSubmatch(conf)
			if m == nil || !regexp.MustCompile(`(?m)^uuid="[0-9a-f-]{36}"$`).MatchString(conf) {
				t.Fatalf("conf when run.lock exists:\n%s", conf)
			}
			addr, err := h.WaitLease(ctx, m[1])
			if err != nil {
				t.Fatal(err)
			}
			waitSSH(t, ctx, h, name, addr, "true")
			log := readFile(h.VMLog(name))
			wantLog := "generated static mac " + m[1]
			if mode == sim.Version16 {
				wantLog += " (based on '" + name + ":0:"
			}
			if !strings.Contains(log, wantLog) {
				t.Errorf("log lacks %q:\n%s", wantLog, log)
			}

			mustVM(t, ctx, h, "poweroff", "-f", name)
			waitState(t, ctx, h, name, "Stopped")
			mustVM(t, ctx, h, "start", name)
			waitState(t, ctx, h, name, "Running")
			if again := readFile(h.ConfPath(name)); again != conf {
				t.Errorf("second start rewrote the conf:\n%s\nwas:\n%s", again, conf)
			}
		})
	}
}

// TestConcurrentGuests boots eight clones at once: distinct addresses, and
// each guest has its own /builds and hostname.
func TestConcurrentGuests(t *testing.T) {
	ctx := testCtx(t, 110*time.Second)
	h := sim.New(t, sim.Options{})
	const n = 8
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("par-%d", i)
		mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), names[i])
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := h.VM(ctx, "start", name)
			if err == nil && r.ExitCode != 0 {
				err = fmt.Errorf("vm start %s: %s", name, r)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	addrs := make([]netip.Addr, n)
	for i, name := range names {
		a, err := h.GuestAddr(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v\nconsole:\n%s", name, err, readFile(h.GuestLog(name)))
		}
		addrs[i] = a
	}
	seen := map[netip.Addr]string{}
	for i, a := range addrs {
		if other, dup := seen[a]; dup {
			t.Errorf("%s and %s share %s", names[i], other, a)
		}
		seen[a] = names[i]
	}
	var rwg sync.WaitGroup
	for i := range names {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			waitSSHNoFatal(ctx, h, addrs[i], "true")
		}()
	}
	rwg.Wait()
	t.Logf("%d guests SSH-ready %v after their concurrent vm start", n, time.Since(start).Round(time.Millisecond))

	// All guests write the same path at once; each must read back its own.
	var swg sync.WaitGroup
	outs := make([]string, n)
	for i := range names {
		swg.Add(1)
		go func() {
			defer swg.Done()
			outs[i] = waitSSHNoFatal(ctx, h, addrs[i], "echo "+names[i]+" > /builds/owner; sleep 0.5; hostname; cat /builds/owner; ls /builds")
		}()
	}
	swg.Wait()
	for i, name := range names {
		if want := name + "\n" + name + "\nowner\n"; outs[i] != want {
			t.Errorf("%s says %q, want %q (guests must not share /builds)", name, outs[i], want)
		}
	}
}

func waitSSHNoFatal(ctx context.Context, h *sim.Host, addr netip.Addr, command string) string {
	for {
		out, err := sshRun(ctx, h, addr, command)
		if err == nil {
			return out
		}
		select {
		case <-ctx.Done():
			return "error: " + err.Error()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestLeaseFileCleanup makes the real Kea rotate its lease file and run the
// real kea-lfc: the lease moves out of the current file but stays findable
// in .1/.2/.completed, as the executor's reader must handle.
func TestLeaseFileCleanup(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})
	base := h.Template() + "@" + h.Snapshot()

	inFile := func(path, mac string) bool {
		rows, err := sim.ReadLeaseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range rows {
			if l.HWAddr == mac && l.ValidLifetime > 0 {
				return true
			}
		}
		return false
	}
	inRotated := func(mac string) bool {
		for _, s := range []string{".1", ".2", ".completed"} {
			if inFile(h.LeaseFile()+s, mac) {
				return true
			}
		}
		return false
	}

	t.Run("RunLFC", func(t *testing.T) {
		mustVM(t, ctx, h, "clone", base, "lfc-1")
		mustVM(t, ctx, h, "start", "lfc-1")
		addr, err := h.GuestAddr(ctx, "lfc-1")
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := h.GuestMAC("lfc-1")
		if err := h.RunLFC(ctx); err != nil {
			t.Fatal(err)
		}
		if inFile(h.LeaseFile(), mac) || !inRotated(mac) {
			t.Errorf("after LFC: current has lease %v, rotated files have it %v\ncurrent:\n%s\n.2:\n%s",
				inFile(h.LeaseFile(), mac), inRotated(mac), readFile(h.LeaseFile()), readFile(h.LeaseFile()+".2"))
		}
		if got, ok, _ := h.Lease(mac); !ok || got != addr {
			t.Errorf("lease lookup across files: %v %v, want %v", got, ok, addr)
		}
	})

	t.Run("fault knob on lease", func(t *testing.T) {
		mustVM(t, ctx, h, "clone", base, "lfc-2")
		if err := h.SetFault("lfc-2", sim.Fault{LFCOnLease: true}); err != nil {
			t.Fatal(err)
		}
		mustVM(t, ctx, h, "start", "lfc-2")
		if _, err := h.GuestAddr(ctx, "lfc-2"); err != nil {
			t.Fatal(err)
		}
		mac, _ := h.GuestMAC("lfc-2")
		for !inRotated(mac) || inFile(h.LeaseFile(), mac) {
			select {
			case <-ctx.Done():
				t.Fatalf("lease never left the current file\nconsole:\n%s", readFile(h.GuestLog("lfc-2")))
			case <-time.After(50 * time.Millisecond):
			}
		}
		// Kea still serves after its reconfigurations.
		mustVM(t, ctx, h, "clone", base, "lfc-3")
		mustVM(t, ctx, h, "start", "lfc-3")
		if _, err := h.GuestAddr(ctx, "lfc-3"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestGuestFaults covers the boot and shutdown knobs, set on the template
// after its snapshot (inherited through the clone origin) or on the guest.
func TestGuestFaults(t *testing.T) {
	ctx := testCtx(t, 100*time.Second)
	h := sim.New(t, sim.Options{})
	base := h.Template() + "@" + h.Snapshot()
	clone := func(name string, f sim.Fault) {
		mustVM(t, ctx, h, "clone", base, name)
		if f != (sim.Fault{}) {
			if err := h.SetFault(name, f); err != nil {
				t.Fatal(err)
			}
		}
		mustVM(t, ctx, h, "start", name)
	}

	t.Run("ACPI ignored, poweroff works", func(t *testing.T) {
		clone("deaf", sim.Fault{IgnoreACPI: true})
		addr, err := h.GuestAddr(ctx, "deaf")
		if err != nil {
			t.Fatal(err)
		}
		waitSSH(t, ctx, h, "deaf", addr, "true")
		mustVM(t, ctx, h, "stop", "deaf")
		// The guest keeps running: a stop it ignores leaves sshd serving
		// well past the shutdown it would otherwise have done.
		time.Sleep(2 * time.Second)
		if s := states(mustVM(t, ctx, h, "list").Stdout)["deaf"]; !strings.HasPrefix(s, "Running") {
			t.Fatalf("ignored ACPI yet state %q", s)
		}
		if r, err := h.VMInput(ctx, "n\n", "poweroff", "deaf"); err != nil || r.ExitCode != 0 || r.Stdout != "" {
			t.Fatalf("poweroff answered n: %v %s", err, r)
		}
		if s := states(mustVM(t, ctx, h, "list").Stdout)["deaf"]; !strings.HasPrefix(s, "Running") {
			t.Fatalf("poweroff answered n stopped the guest: %q", s)
		}
		mustVM(t, ctx, h, "poweroff", "deaf") // stdin at EOF answers yes
		waitState(t, ctx, h, "deaf", "Stopped")
	})

	t.Run("no DHCP answer", func(t *testing.T) {
		clone("nodhcp", sim.Fault{NoDHCP: true})
		waitState(t, ctx, h, "nodhcp", "Running")
		mac, err := h.GuestMAC("nodhcp")
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if a, err := h.WaitLease(short, mac); err == nil {
			t.Fatalf("got lease %s despite NoDHCP", a)
		}
	})

	t.Run("sshd never starts", func(t *testing.T) {
		clone("nosshd", sim.Fault{NoSSHD: true})
		addr, err := h.GuestAddr(ctx, "nosshd")
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		for short.Err() == nil {
			if c, err := h.DialContext(short, "tcp", netip.AddrPortFrom(addr, 22).String()); err == nil {
				c.Close()
				t.Fatal("port 22 answered despite NoSSHD")
			} else if !errors.Is(err, syscall.ECONNREFUSED) && short.Err() == nil {
				t.Fatalf("dial: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("template knob set after snapshot reaches clones", func(t *testing.T) {
		if err := h.SetFault(h.Template(), sim.Fault{Fail: sim.FailStart, FailMessage: "guest appears to be running already"}); err != nil {
			t.Fatal(err)
		}
		defer h.SetFault(h.Template(), sim.Fault{})
		mustVM(t, ctx, h, "clone", base, "inherit")
		r := vm(t, ctx, h, "start", "inherit")
		if r.ExitCode != 1 || !strings.HasSuffix(r.Stdout, "  ! guest appears to be running already\n") {
			t.Errorf("inherited start failure: %s", r)
		}
		// The clone's own knob wins.
		if err := h.SetFault("inherit", sim.Fault{Fail: sim.FailDestroy}); err != nil {
			t.Fatal(err)
		}
		mustVM(t, ctx, h, "start", "inherit")
		waitState(t, ctx, h, "inherit", "Running")
	})

	t.Run("_run fails after start said ok", func(t *testing.T) {
		clone("badload", sim.Fault{Fail: sim.FailRun})
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(readFile(h.VMLog("badload")), "stopped") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		log := readFile(h.VMLog("badload"))
		if !strings.Contains(log, "fatal; loader returned error 1\n") || !strings.Contains(log, "stopped\n") {
			t.Errorf("vm-bhyve.log:\n%s", log)
		}
		waitState(t, ctx, h, "badload", "Stopped")
	})

	t.Run("stop in the bootloader stage asks", func(t *testing.T) {
		clone("loading", sim.Fault{LoaderDelay: 10 * time.Minute})
		waitState(t, ctx, h, "loading", "Bootloader")
		if r, err := h.VMInput(ctx, "n\n", "stop", "loading"); err != nil || r.ExitCode != 0 || r.Stdout != "" {
			t.Fatalf("stop answered n: %v %s", err, r)
		}
		if s := states(mustVM(t, ctx, h, "list").Stdout)["loading"]; !strings.HasPrefix(s, "Bootloader") {
			t.Fatalf("answering n changed the state to %q", s)
		}
		if r := mustVM(t, ctx, h, "stop", "loading"); r.Stdout != "Killing loading\n" {
			t.Errorf("stop at EOF: %s", r)
		}
		waitState(t, ctx, h, "loading", "Stopped")
		if log := readFile(h.VMLog("loading")); !strings.Contains(log, "fatal; loader returned error 143\n") {
			t.Errorf("vm-bhyve.log:\n%s", log)
		}
	})

	t.Run("stale lock after stop", func(t *testing.T) {
		clone("crashy", sim.Fault{RunLock: sim.LockStale})
		waitState(t, ctx, h, "crashy", "Running")
		mustVM(t, ctx, h, "poweroff", "-f", "crashy")
		waitState(t, ctx, h, "crashy", "Locked (")
		// "Locked" shows as soon as bhyve is gone, while _run still tears
		// down taps and the vmm (a start then still sees "running"). Wait
		// for the supervisor to finish, as vm-bhyve users must.
		waitNoSupervisor(t, ctx, h, "crashy")
		// start ignores a stale local lock; destroy does not.
		r := vm(t, ctx, h, "destroy", "-f", "crashy")
		if r.ExitCode != 1 || !strings.Contains(r.Stderr, "crashy appears to be running on "+h.HostName()+" (locked)") {
			t.Errorf("destroy with stale lock: %s", r)
		}
		mustVM(t, ctx, h, "start", "crashy")
		waitState(t, ctx, h, "crashy", "Running")
	})
}

// TestTeardown: Close leaves no process, namespace, link, mount or file.
func TestTeardown(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	root := t.TempDir()
	h, err := sim.Start(ctx, sim.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			h.Close()
		}
	})
	mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), "td-1")
	mustVM(t, ctx, h, "start", "td-1")
	addr, err := h.GuestAddr(ctx, "td-1")
	if err != nil {
		t.Fatal(err)
	}
	waitSSH(t, ctx, h, "td-1", addr, "true")
	// A process left running inside the host namespace must go too.
	stray := h.Command(ctx, "sleep", "600")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	go stray.Wait()

	before := h.Resources()
	if len(before.Processes) == 0 || len(before.NetNS) != 1 {
		t.Fatalf("resources of a live host not seen:\n%s", before)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if r := h.Resources(); !r.Empty() {
		t.Errorf("left behind:\n%s", r)
	}
	ns, err := osExec("ip", "netns", "list")
	if err != nil || strings.Contains(ns, h.NetNS()) {
		t.Errorf("ip netns list: %v\n%s", err, ns)
	}
	links, err := osExec("ip", "-o", "link", "show")
	if err != nil || strings.Contains(links, h.ID()) {
		t.Errorf("ip link: %v\n%s", err, links)
	}
	ps, err := osExec("ps", "-eo", "pid,args")
	if err != nil || strings.Contains(ps, root) || strings.Contains(ps, "bhyve: td-1") {
		t.Errorf("process table: %v\n%s", err, ps)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("root not empty: %v", names)
	}
}

func osExec(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestTemplateHostKeys: a second template with host keys of its own and of
// several types. Its clones present its keys, not the default template's,
// and a client pinning ed25519 must ask for ed25519 (golang/go#49631): the
// simulator runs a real sshd, so the pitfall is real here too.
func TestTemplateHostKeys(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})
	if err := h.AddTemplate("multi", "base", sim.WithOwnHostKey(), sim.WithHostKeyTypes("ed25519", "ecdsa")); err != nil {
		t.Fatal(err)
	}
	own, err := h.TemplateHostKey("multi")
	if err != nil {
		t.Fatal(err)
	}
	if own.Type() != ssh.KeyAlgoED25519 || bytes.Equal(own.Marshal(), h.HostKey().Marshal()) {
		t.Fatalf("template key %s is not its own ed25519 key", own.Type())
	}
	if kh := readFile(h.KnownHostsPath()); strings.Count(kh, ",multi ") != 2 || strings.Count(kh, ",tmpl ") != 1 {
		t.Errorf("known_hosts:\n%s", kh)
	}
	mustVM(t, ctx, h, "clone", "multi@base", "mk-1")
	mustVM(t, ctx, h, "start", "mk-1")
	addr, err := h.GuestAddr(ctx, "mk-1")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := h.Signer()
	if err != nil {
		t.Fatal(err)
	}
	dial := func(key ssh.PublicKey, algos []string) error {
		hostPort := netip.AddrPortFrom(addr, 22).String()
		for {
			conn, err := h.DialContext(ctx, "tcp", hostPort)
			if err == nil {
				c, chans, reqs, herr := ssh.NewClientConn(conn, hostPort, &ssh.ClientConfig{
					User: h.SSHUser(), Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
					HostKeyCallback: ssh.FixedHostKey(key), HostKeyAlgorithms: algos,
				})
				if herr == nil {
					ssh.NewClient(c, chans, reqs).Close()
					return nil
				}
				conn.Close()
				if strings.Contains(herr.Error(), "host key mismatch") {
					return herr
				}
				err = herr
			}
			if ctx.Err() != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err := dial(own, []string{ssh.KeyAlgoED25519}); err != nil {
		t.Errorf("pinned own ed25519 key: %v", err)
	}
	if err := dial(h.HostKey(), []string{ssh.KeyAlgoED25519}); err == nil {
		t.Error("the default template's key was accepted for a clone of another template")
	}
	if err := dial(own, nil); err == nil {
		t.Error("without HostKeyAlgorithms the server's ECDSA key should not match a pinned ed25519 key")
	}
}

// waitNoSupervisor waits until no `vm _run NAME` process is left.
func waitNoSupervisor(t *testing.T, ctx context.Context, h *sim.Host, name string) {
	t.Helper()
	for {
		busy := false
		for _, p := range h.Resources().Processes {
			if strings.HasSuffix(p.Cmdline, " _run "+name) {
				busy = true
			}
		}
		if !busy {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("_run %s never exited", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
