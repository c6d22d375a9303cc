// Package netcmd is the simulated host's arp(8) and the if_bridge part of
// ifconfig(8): the invocations the executor uses to bind a job VM's address
// and MAC to its tap, translated to the Linux equivalents inside the host's
// network namespace. Messages and exit codes are FreeBSD's (usr.sbin/arp/
// arp.c and arp_netlink.c, sbin/ifconfig/ifbridge.c in freebsd-src); every
// other use of the commands is refused with the real usage text, so a test
// never passes on an invocation FreeBSD would reject.
package netcmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

type runner struct {
	cfg            *simstate.Config
	stdout, stderr io.Writer
	prog           string
}

// warnx is err(3)'s warnx/xo_warnx: "PROG: msg" on stderr.
func (r *runner) warnx(format string, args ...any) {
	fmt.Fprintf(r.stderr, "%s: %s\n", r.prog, fmt.Sprintf(format, args...))
}

// tool runs ip or bridge in the host's network namespace and returns its
// combined output.
func (r *runner) tool(path string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(path, append([]string{"-n", r.cfg.NetNS}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

type link struct {
	Name string `json:"ifname"`
	Addr []struct {
		Family string `json:"family"`
		Local  string `json:"local"`
		Prefix int    `json:"prefixlen"`
	} `json:"addr_info"`
}

func (r *runner) links() ([]link, error) {
	out, err := exec.Command(r.cfg.Tools.IP, "-n", r.cfg.NetNS, "-j", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip addr show: %w", err)
	}
	var ls []link
	if err := json.Unmarshal(out, &ls); err != nil {
		return nil, fmt.Errorf("ip addr show: %w", err)
	}
	return ls, nil
}

// ifaceFor is arp's fix_ifindex: the interface whose IPv4 prefix holds
// addr ("" when none does).
func (r *runner) ifaceFor(addr netip.Addr) string {
	ls, err := r.links()
	if err != nil {
		return ""
	}
	for _, l := range ls {
		for _, a := range l.Addr {
			if a.Family != "inet" {
				continue
			}
			local, err := netip.ParseAddr(a.Local)
			if err != nil {
				continue
			}
			if netip.PrefixFrom(local, a.Prefix).Masked().Contains(addr) {
				return l.Name
			}
		}
	}
	return ""
}

// ether_aton(3) accepts one or two hex digits per octet; ether_ntoa prints
// them without leading zeros, the Linux tools want them padded.
func etherAton(s string) (net.HardwareAddr, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return nil, false
	}
	mac := make(net.HardwareAddr, 6)
	for i, p := range parts {
		if len(p) < 1 || len(p) > 2 {
			return nil, false
		}
		b, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return nil, false
		}
		mac[i] = byte(b)
	}
	return mac, true
}
