package host

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netnsPath is where `ip netns add` pins a namespace.
func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

func netnsExists(ns string) bool {
	_, err := os.Stat(netnsPath(ns))
	return err == nil
}

// setupNetwork creates the host's own network namespace with the switch
// bridge. Nothing of the simulated network touches the machine's namespace.
func setupNetwork(ctx context.Context, cfg *simstate.Config) error {
	ip := cfg.Tools.IP
	ns := cfg.NetNS
	prefix, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil {
		return fmt.Errorf("subnet %q: %w", cfg.Subnet, err)
	}
	if err := run(ctx, ip, "netns", "add", ns); err != nil {
		return err
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	mac := fmt.Sprintf("58:9c:fc:1%x:%02x:%02x", b[0]&0x0f, b[1], b[2])
	steps := [][]string{
		{"-n", ns, "link", "set", "dev", "lo", "up"},
		{"-n", ns, "link", "add", cfg.Bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		// A fixed bridge MAC: otherwise it follows the lowest port MAC and
		// changes whenever a guest comes or goes.
		{"-n", ns, "link", "set", "dev", cfg.Bridge, "address", mac},
		{"-n", ns, "addr", "add", cfg.HostAddr + "/" + fmt.Sprint(prefix.Bits()), "dev", cfg.Bridge},
		{"-n", ns, "link", "set", "dev", cfg.Bridge, "up"},
		// A bridge without an up port has no carrier and Kea will not serve
		// on a non-running interface; a FreeBSD bridge is always running.
		// A veth pair with one end as a port gives the switch its carrier
		// (no dummy driver needed).
		{"-n", ns, "link", "add", carrierName(cfg.ID, "a"), "type", "veth", "peer", "name", carrierName(cfg.ID, "b")},
		{"-n", ns, "link", "set", "dev", carrierName(cfg.ID, "a"), "master", cfg.Bridge},
		{"-n", ns, "link", "set", "dev", carrierName(cfg.ID, "b"), "up"},
		{"-n", ns, "link", "set", "dev", carrierName(cfg.ID, "a"), "up"},
	}
	for _, s := range steps {
		if err := run(ctx, ip, s...); err != nil {
			return err
		}
	}
	if err := waitRunning(ctx, cfg); err != nil {
		return err
	}
	// IPv4 only, like the Kea setup: no router solicitations or DAD noise.
	_ = run(ctx, cfg.Tools.Nsenter, "--net="+netnsPath(ns), "--", "/bin/sh", "-c",
		"echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
	return nil
}

func carrierName(id, end string) string { return "vm-car" + end + "-" + id }

// waitRunning waits for the bridge to report a carrier.
func waitRunning(ctx context.Context, cfg *simstate.Config) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, cfg.Tools.IP, "-n", cfg.NetNS, "-j", "link", "show", "dev", cfg.Bridge).Output()
		if err == nil {
			var ls []struct {
				Flags []string `json:"flags"`
				Oper  string   `json:"operstate"`
			}
			if json.Unmarshal(out, &ls) == nil && len(ls) == 1 && ls[0].Oper == "UP" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge %s did not come up: %s", cfg.Bridge, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
