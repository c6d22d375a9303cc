package sim_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// TestListen: a socket from Host.Listen lives in the host's namespace, so
// a process of the host and a guest behind the bridge reach it at
// HostAddr(), while the test's own namespace does not.
func TestListen(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})

	if _, err := h.Listen(ctx, "tcp", "localhost:0"); err == nil || !strings.Contains(err.Error(), "numeric") {
		t.Errorf("Listen on a host name: %v, want an error asking for a numeric address", err)
	}

	l, err := h.Listen(ctx, "tcp", h.HostAddr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := l.Addr().(*net.TCPAddr)
	if addr.IP.String() != h.HostAddr().String() || addr.Port == 0 {
		t.Fatalf("listening on %s, want %s:<port>", addr, h.HostAddr())
	}
	// Each connection is told where it came from.
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	// bash's /dev/tcp: no client tool needed on the host or in the guest.
	dial := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d && cat <&3", addr.IP, addr.Port)

	t.Run("from the host", func(t *testing.T) {
		out, err := h.Command(ctx, "bash", "-c", dial).CombinedOutput()
		if err != nil || string(out) != "hello "+h.HostAddr().String()+"\n" {
			t.Errorf("host-side connection: %v %q", err, out)
		}
	})

	t.Run("through DialContext", func(t *testing.T) {
		c, err := h.DialContext(ctx, "tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "hello "+h.HostAddr().String()+"\n" {
			t.Errorf("DialContext: %v %q", err, line)
		}
	})

	t.Run("not from the test's namespace", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var d net.Dialer
		if c, err := d.DialContext(short, "tcp", addr.String()); err == nil {
			c.Close()
			t.Errorf("reached %s from the root namespace; the listener leaked out of %s", addr, h.NetNS())
		}
	})

	t.Run("from a guest", func(t *testing.T) {
		const name = "listen-1"
		mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), name)
		mustVM(t, ctx, h, "start", name)
		guest, err := h.GuestAddr(ctx, name)
		if err != nil {
			t.Fatalf("%v\nconsole:\n%s", err, readFile(h.GuestLog(name)))
		}
		out := waitSSH(t, ctx, h, name, guest, "bash -c '"+dial+"'")
		if out != "hello "+guest.String()+"\n" {
			t.Errorf("guest-side connection said %q, want hello %s", out, guest)
		}
		mustVM(t, ctx, h, "poweroff", "-f", name)
		waitState(t, ctx, h, name, "Stopped")
		mustVM(t, ctx, h, "destroy", "-f", name)
	})
}
