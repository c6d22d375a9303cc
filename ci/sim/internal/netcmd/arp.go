package netcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// arpUsage is usage() of usr.sbin/arp/arp.c.
const arpUsage = `usage: arp [-n] [-i interface] hostname
       arp [-n] [-i interface] -a
       arp -d hostname [pub]
       arp -d [-i interface] -a
       arp -s hostname ether_addr [temp] [reject | blackhole] [pub [only]]
       arp -S hostname ether_addr [temp] [reject | blackhole] [pub [only]]
       arp -f filename
`

// MainArp is arp(8) for numeric IPv4 addresses: -s/-S (a permanent entry,
// ip neigh replace ... nud permanent: ip-neighbour(8) "valid forever and
// can be only removed administratively", as FreeBSD's static entries that
// "attempts to modify permanent entry" refuses), -d and -a. The
// options temp, pub, reject, blackhole, -f and -i are not simulated.
func MainArp(cfg *simstate.Config, args []string, stdout, stderr io.Writer) int {
	r := &runner{cfg: cfg, stdout: stdout, stderr: stderr, prog: "arp"}
	usage := func() int { fmt.Fprint(stderr, arpUsage); return 1 }
	var fn byte
	all := false
	i := 0
	// getopt(argc, argv, "andfsSi:"); SETFUNC refuses a second function.
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for _, c := range a[1:] {
			switch c {
			case 'a':
				all = true
			case 'n':
			case 'd', 's', 'S':
				if fn != 0 {
					return usage()
				}
				fn = byte(c)
			default:
				return usage()
			}
		}
	}
	rest := args[i:]
	switch fn {
	case 0:
		switch {
		case all && len(rest) == 0:
			r.arpList(netip.Addr{})
			return 0
		case !all && len(rest) == 1:
			return r.arpGet(rest[0])
		}
		return usage()
	case 's', 'S':
		if len(rest) < 2 || len(rest) > 6 {
			return usage()
		}
		if len(rest) > 2 {
			r.warnx("the simulator does not support %q", strings.Join(rest[2:], " "))
			return 1
		}
		if fn == 'S' {
			_ = r.arpDelete(rest[0])
		}
		return r.arpSet(rest[0], rest[1])
	case 'd':
		if all || len(rest) != 1 {
			// arp -d -a is not simulated: it would clear the host's
			// entries of every job.
			return usage()
		}
		return r.arpDelete(rest[0])
	}
	return usage()
}

// getaddr: inet_addr, then gethostbyname (names are not simulated).
func (r *runner) getaddr(host string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		r.warnx("%s: Unknown host", host)
		return netip.Addr{}, false
	}
	return a, true
}

// arpSet is set() + set_nl(): "delete: cannot locate" (sic) and status 0
// when no interface holds the address.
func (r *runner) arpSet(host, eaddr string) int {
	addr, ok := r.getaddr(host)
	if !ok {
		return 1
	}
	mac, ok := etherAton(eaddr)
	if !ok {
		r.warnx("invalid Ethernet address '%s'", eaddr)
		return 1
	}
	dev := r.ifaceFor(addr)
	if dev == "" {
		r.warnx("delete: cannot locate %s", host)
		return 0
	}
	if out, err := r.tool(r.cfg.Tools.IP, "neigh", "replace", addr.String(), "lladdr", mac.String(), "dev", dev, "nud", "permanent"); err != nil {
		r.warnx("set %s: %s", host, out)
		return 1
	}
	return 0
}

// arpDelete is delete_nl: "HOST (ADDR) deleted" on stdout, or
// "delete HOST: No such file or directory" and status 1 when there is no
// entry.
func (r *runner) arpDelete(host string) int {
	addr, ok := r.getaddr(host)
	if !ok {
		return 1
	}
	dev := r.ifaceFor(addr)
	if dev == "" {
		r.warnx("delete: cannot locate %s", host)
		return 0
	}
	if !r.hasNeigh(addr, dev) {
		r.warnx("delete %s: No such file or directory", host)
		return 1
	}
	if out, err := r.tool(r.cfg.Tools.IP, "neigh", "del", addr.String(), "dev", dev); err != nil {
		r.warnx("delete %s: %s", host, out)
		return 1
	}
	fmt.Fprintf(r.stdout, "%s (%s) deleted\n", host, addr)
	return 0
}

type neigh struct {
	Dst    string   `json:"dst"`
	Dev    string   `json:"dev"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

func (r *runner) neighbours() []neigh {
	out, err := exec.Command(r.cfg.Tools.IP, "-n", r.cfg.NetNS, "-j", "-4", "neigh", "show").Output()
	if err != nil {
		return nil
	}
	var ns []neigh
	_ = json.Unmarshal(out, &ns)
	return ns
}

func (r *runner) hasNeigh(addr netip.Addr, dev string) bool {
	for _, n := range r.neighbours() {
		// A FAILED entry has no link-layer address and FreeBSD would have
		// none either.
		if n.Dst == addr.String() && n.Dev == dev && n.LLAddr != "" {
			return true
		}
	}
	return false
}

// arpGet is get(): the entry, or "HOST (ADDR) -- no entry" and status 1.
func (r *runner) arpGet(host string) int {
	addr, ok := r.getaddr(host)
	if !ok {
		return 1
	}
	if r.arpList(addr) == 0 {
		fmt.Fprintf(r.stdout, "%s (%s) -- no entry\n", host, addr)
		return 1
	}
	return 0
}

// arpList is print_entries (as with -n: "?" as the name) for one address
// or, when only is the zero Addr, all; it returns how many it printed.
// Entries on the switch bridge print " [bridge]" (IFT_BRIDGE), others
// " [ethernet]".
func (r *runner) arpList(only netip.Addr) int {
	// FreeBSD keeps ARP entries only on interfaces with an IPv4 address;
	// Linux also learns neighbours on the host's address-less carrier port.
	inet := map[string]bool{}
	if ls, err := r.links(); err == nil {
		for _, l := range ls {
			for _, a := range l.Addr {
				inet[l.Name] = inet[l.Name] || a.Family == "inet"
			}
		}
	}
	count := 0
	for _, n := range r.neighbours() {
		if n.LLAddr == "" || !inet[n.Dev] || (only.IsValid() && n.Dst != only.String()) {
			continue
		}
		count++
		line := fmt.Sprintf("? (%s) at %s on %s", n.Dst, etherNtoa(n.LLAddr), n.Dev)
		permanent := false
		for _, s := range n.State {
			permanent = permanent || s == "PERMANENT"
		}
		if permanent {
			line += " permanent"
		} else {
			line += " expires in 1200 seconds"
		}
		if n.Dev == r.cfg.Bridge {
			line += " [bridge]"
		} else {
			line += " [ethernet]"
		}
		fmt.Fprintln(r.stdout, line)
	}
	return count
}

// etherNtoa prints a MAC as ether_ntoa(3) does: "%x:%x:%x:%x:%x:%x", no
// leading zeros.
func etherNtoa(s string) string {
	mac, ok := etherAton(s)
	if !ok {
		return s
	}
	return fmt.Sprintf("%x:%x:%x:%x:%x:%x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}
