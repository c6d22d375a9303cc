package sim

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// DialContext connects from inside the host's network namespace, where the
// guests are reachable. The socket is created in that namespace on a locked
// OS thread and stays there; the thread is restored before reuse.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	hostPart, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sim dial %s: %w", addr, err)
	}
	ip, err := netip.ParseAddr(hostPart)
	if err != nil {
		// Resolve here: a resolver would start goroutines on other threads.
		ips, rerr := net.DefaultResolver.LookupNetIP(ctx, "ip4", hostPart)
		if rerr != nil || len(ips) == 0 {
			return nil, fmt.Errorf("sim dial %s: %w", addr, rerr)
		}
		ip = ips[0]
	}
	target, err := os.Open("/run/netns/" + h.cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("sim dial: host namespace: %w", err)
	}
	defer target.Close()

	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("sim dial: own namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("sim dial: enter %s: %w", h.cfg.NetNS, err)}
			return
		}
		var d net.Dialer
		c, derr := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it with this goroutine
			// rather than reuse a thread in the wrong namespace.
			ch <- result{c, derr}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, derr}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return r.c, nil
}

// Command prepares a command that runs as part of the FreeBSD host, as the
// executor under test and `ssh` to a guest would: inside the host's network
// namespace, in a UTS namespace named HostName, with Env() added to the
// environment (so "vm" and "sysrc" resolve to the fakes).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"--root", h.cfg.Root, "exec", "--", name}, args...)
	cmd := exec.CommandContext(ctx, h.cfg.Binary, argv...)
	cmd.Env = mergeEnv(os.Environ(), h.Env())
	return cmd
}

// mergeEnv returns base with the entries of over replacing same-name ones.
func mergeEnv(base, over []string) []string {
	keys := map[string]bool{}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	var out []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}
