package netcmd

import (
	"encoding/json"
	"io"
	"os/exec"
	"strconv"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// MainIfconfig is `ifconfig BRIDGE CMD...` for the if_bridge commands that
// pin a guest to its tap (sbin/ifconfig/ifbridge.c), several per line as
// ifconfig allows:
//
//	static IF MAC   -> bridge fdb replace MAC dev IF master static sticky
//	                   (sticky: a Linux static entry otherwise moves when the
//	                   MAC is learned on another port; FreeBSD's never does)
//	deladdr MAC     -> bridge fdb del MAC dev IF master (any port)
//	ifmaxaddr IF N  -> N > 0: port locked on (only source MACs with an fdb
//	                   entry on the port pass: FreeBSD's behaviour once the
//	                   port holds N entries, which is how the executor uses
//	                   it, static entry first); N = 0: locked off
//	private IF / -private IF -> isolated on / off
//
// Anything else is refused, so an invocation real ifconfig would treat
// differently never passes here.
func MainIfconfig(cfg *simstate.Config, args []string, stdout, stderr io.Writer) int {
	r := &runner{cfg: cfg, stdout: stdout, stderr: stderr, prog: "ifconfig"}
	if len(args) < 2 {
		r.warnx("the simulator supports only `ifconfig BRIDGE static|deladdr|ifmaxaddr|private|-private ...`")
		return 1
	}
	br := args[0]
	if !r.isBridge(br) {
		// ifconfig.c: "interface %s does not exist".
		r.warnx("interface %s does not exist", br)
		return 1
	}
	rest := args[1:]
	// ifconfig runs each command as it parses it; an error exits at once,
	// after the earlier ones took effect.
	for len(rest) > 0 {
		need := func(n int) bool {
			if len(rest) < n+1 {
				// ifconfig.c: "'%s' requires argument(s)".
				r.warnx("'%s' requires argument", rest[0])
				return false
			}
			return true
		}
		switch rest[0] {
		case "static":
			if !need(2) {
				return 1
			}
			if st := r.static(br, rest[1], rest[2]); st != 0 {
				return st
			}
			rest = rest[3:]
		case "deladdr":
			if !need(1) {
				return 1
			}
			if st := r.deladdr(br, rest[1]); st != 0 {
				return st
			}
			rest = rest[2:]
		case "ifmaxaddr":
			if !need(2) {
				return 1
			}
			if st := r.ifmaxaddr(br, rest[1], rest[2]); st != 0 {
				return st
			}
			rest = rest[3:]
		case "private", "-private":
			if !need(1) {
				return 1
			}
			if !r.isMember(br, rest[1]) {
				// do_bridgeflag: BRDGGIFFLGS fails with ENOENT.
				r.warnx("unable to get bridge flags: No such file or directory")
				return 1
			}
			on := "on"
			if rest[0] == "-private" {
				on = "off"
			}
			if out, err := r.tool(r.cfg.Tools.IP, "link", "set", "dev", rest[1], "type", "bridge_slave", "isolated", on); err != nil {
				r.warnx("unable to set bridge flags: %s", out)
				return 1
			}
			rest = rest[2:]
		default:
			r.warnx("the simulator does not support %q", rest[0])
			return 1
		}
	}
	return 0
}

// linkInfo returns a host interface's bridge (master) and kind.
func (r *runner) linkInfo(dev string) (master, kind string, ok bool) {
	out, err := exec.Command(r.cfg.Tools.IP, "-n", r.cfg.NetNS, "-j", "-d", "link", "show", "dev", dev).Output()
	if err != nil {
		return "", "", false
	}
	var ls []struct {
		Master   string `json:"master"`
		LinkInfo struct {
			Kind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	if json.Unmarshal(out, &ls) != nil || len(ls) != 1 {
		return "", "", false
	}
	return ls[0].Master, ls[0].LinkInfo.Kind, true
}

func (r *runner) isBridge(dev string) bool {
	_, kind, ok := r.linkInfo(dev)
	return ok && kind == "bridge"
}

func (r *runner) isMember(br, dev string) bool {
	master, _, ok := r.linkInfo(dev)
	return ok && master == br
}

// static is setbridge_static: bridge_ioctl_saddr finds no member by that
// name -> ENOENT, "BRDGSADDR IF: No such file or directory".
func (r *runner) static(br, dev, mac string) int {
	ea, ok := etherAton(mac)
	if !ok {
		r.warnx("%s: invalid address: %s", dev, mac)
		return 1
	}
	if !r.isMember(br, dev) {
		r.warnx("BRDGSADDR %s: No such file or directory", dev)
		return 1
	}
	if out, err := r.tool(r.cfg.Tools.Bridge, "fdb", "replace", ea.String(), "dev", dev, "master", "static", "sticky"); err != nil {
		r.warnx("BRDGSADDR %s: %s", dev, out)
		return 1
	}
	return 0
}

type fdbEntry struct {
	MAC    string   `json:"mac"`
	Dev    string   `json:"ifname"`
	Master string   `json:"master"`
	Flags  []string `json:"flags"`
	State  string   `json:"state"`
}

// deladdr is setbridge_deladdr: bridge_rtdaddr removes the bridge's entry
// for MAC wherever it is; none -> ENOENT.
func (r *runner) deladdr(br, mac string) int {
	ea, ok := etherAton(mac)
	if !ok {
		r.warnx("invalid address: %s", mac)
		return 1
	}
	out, err := exec.Command(r.cfg.Tools.Bridge, "-n", r.cfg.NetNS, "-j", "fdb", "show", "br", br).Output()
	var entries []fdbEntry
	if err == nil {
		_ = json.Unmarshal(out, &entries)
	}
	for _, e := range entries {
		// Entries without master are the ports' own (self) addresses,
		// not the bridge's forwarding table.
		if e.MAC != ea.String() || e.Master != br {
			continue
		}
		if msg, err := r.tool(r.cfg.Tools.Bridge, "fdb", "del", ea.String(), "dev", e.Dev, "master"); err != nil {
			r.warnx("BRDGDADDR %s: %s", mac, msg)
			return 1
		}
		return 0
	}
	r.warnx("BRDGDADDR %s: No such file or directory", mac)
	return 1
}

// ifmaxaddr is setbridge_ifmaxaddr (get_val, then BRDGSIFAMAX).
func (r *runner) ifmaxaddr(br, dev, arg string) int {
	n, err := strconv.ParseUint(arg, 0, 32)
	if err != nil {
		r.warnx("invalid value: %s", arg)
		return 1
	}
	if !r.isMember(br, dev) {
		r.warnx("BRDGSIFAMAX %s: No such file or directory", arg)
		return 1
	}
	locked := "on"
	if n == 0 {
		locked = "off"
	}
	if out, err := r.tool(r.cfg.Tools.IP, "link", "set", "dev", dev, "type", "bridge_slave", "locked", locked); err != nil {
		r.warnx("BRDGSIFAMAX %s: %s", arg, out)
		return 1
	}
	return 0
}
