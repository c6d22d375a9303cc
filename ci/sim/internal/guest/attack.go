package guest

import (
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// attack is what a compromised job VM with root does to a neighbour (the
// StealIP and StealMAC knobs): answer for its address (the address on our
// NIC, so the kernel answers ARP requests for it, plus a gratuitous ARP
// every 100ms so the host's entry flips to us even when nobody asks) and
// take its MAC (so a learning bridge forwards the neighbour's frames to
// our port once we send with it; every 2ms, to outpace the victim).
type attack struct {
	ip     netip.Addr
	mac    string
	ticker *time.Ticker
}

const attackNIC = "vtnet0"

func (a *attack) apply(g *guestInit, cmd string) {
	verb, arg, _ := strings.Cut(cmd, " ")
	ipt := g.p.Tools.IP
	run := func(args ...string) {
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			g.logf("attack: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	switch verb {
	case "steal-ip":
		if a.ip.IsValid() {
			run("addr", "del", a.ip.String()+"/32", "dev", attackNIC)
		}
		a.ip = netip.Addr{}
		if addr, err := netip.ParseAddr(arg); err == nil {
			a.ip = addr
			run("addr", "add", addr.String()+"/32", "dev", attackNIC)
			g.logf("attack: answering for %s", addr)
		}
	case "steal-mac":
		if arg == "" {
			return
		}
		a.mac = arg
		// Not every driver changes the address of a running link.
		run("link", "set", "dev", attackNIC, "down")
		run("link", "set", "dev", attackNIC, "address", arg)
		run("link", "set", "dev", attackNIC, "up")
		g.logf("attack: took MAC %s", arg)
	}
	if (a.ip.IsValid() || a.mac != "") && a.ticker == nil {
		// A MAC thief must send more often than its victim: a learning
		// bridge moves the MAC to whichever port sent with it last, and the
		// victim's own traffic (its stage's SSH session) moves it back.
		every := 100 * time.Millisecond
		if a.mac != "" {
			every = 2 * time.Millisecond
		}
		a.ticker = time.NewTicker(every)
	}
	a.announce(g)
}

func (a *attack) announce(g *guestInit) {
	addrs := []netip.Addr{a.ip}
	if !a.ip.IsValid() {
		// A MAC thief with no stolen address still sends from the MAC,
		// announcing its own address, so the bridge learns it.
		b, _ := exec.Command(g.p.Tools.IP, "-4", "-o", "addr", "show", "dev", attackNIC).Output()
		addrs = nil
		for _, f := range strings.Fields(string(b)) {
			if p, err := netip.ParsePrefix(f); err == nil {
				addrs = append(addrs, p.Addr())
			}
		}
	}
	for _, addr := range addrs {
		if addr.IsValid() {
			_ = announce(attackNIC, addr)
		}
	}
	// A stolen address the host has no entry for yet (the next job's,
	// claimed before that VM exists) is learnt from a request to the host
	// itself, as when the attacker talks to it from that address.
	if a.ip.IsValid() {
		if gw, ok := a.router(g); ok {
			_ = arpRequest(attackNIC, a.ip, gw)
		}
	}
}

// router is the host's bridge address: the simulated network has no
// default route (rootfs.go's udhcpc script installs the address only), and
// the host holds the first address of the guest's own subnet.
func (a *attack) router(g *guestInit) (netip.Addr, bool) {
	b, _ := exec.Command(g.p.Tools.IP, "-4", "-o", "addr", "show", "dev", attackNIC).Output()
	for _, f := range strings.Fields(string(b)) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Bits() < 32 {
			return p.Masked().Addr().Next(), true
		}
	}
	return netip.Addr{}, false
}

func (a *attack) tick() <-chan time.Time {
	if a.ticker == nil {
		return nil
	}
	return a.ticker.C
}

func (a *attack) stop() {
	if a.ticker != nil {
		a.ticker.Stop()
	}
}
