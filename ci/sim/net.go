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
	var c net.Conn
	err = h.inNetNS(func() error {
		var d net.Dialer
		var derr error
		c, derr = d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		return derr
	})
	if err != nil {
		return nil, fmt.Errorf("sim dial %s: %w", addr, err)
	}
	return c, nil
}

// Listen opens a listening socket inside the host's network namespace, so
// processes there (the runner under test) and the guests behind the bridge
// reach it at HostAddr(). A socket keeps the namespace it was created in, so
// accepting on it later from any thread is fine. addr must be numeric: a
// resolver would run on other threads, outside the namespace.
func (h *Host) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	hostPart, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sim listen %s: %w", addr, err)
	}
	if hostPart != "" {
		if _, err := netip.ParseAddr(hostPart); err != nil {
			return nil, fmt.Errorf("sim listen %s: want a numeric address such as %s:0: %w", addr, h.HostAddr(), err)
		}
	}
	var l net.Listener
	err = h.inNetNS(func() error {
		var lc net.ListenConfig
		var lerr error
		l, lerr = lc.Listen(ctx, network, addr)
		return lerr
	})
	if err != nil {
		return nil, fmt.Errorf("sim listen %s: %w", addr, err)
	}
	return l, nil
}

// inNetNS runs fn on a locked OS thread that has joined the host's network
// namespace; sockets fn creates belong to that namespace for their lifetime.
// The thread is moved back before Go may reuse it.
func (h *Host) inNetNS(fn func() error) error {
	target, err := os.Open("/run/netns/" + h.cfg.NetNS)
	if err != nil {
		return fmt.Errorf("host namespace: %w", err)
	}
	defer target.Close()

	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("own namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter %s: %w", h.cfg.NetNS, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it with this goroutine
			// rather than reuse a thread in the wrong namespace.
			done <- ferr
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
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
