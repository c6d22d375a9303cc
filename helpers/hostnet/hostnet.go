// Package hostnet binds a job VM's address and MAC to the VM's own tap on
// the bhyve host, so that no other guest on the switch can receive what the
// runner sends to that VM:
//
//   - a permanent ARP entry for the VM's address (arp -S ADDR MAC): an
//     incoming ARP that tries to change it is refused ("attempts to modify
//     permanent entry", arp(4)), so a neighbour answering for the address
//     or announcing it by gratuitous ARP changes nothing;
//   - a static bridge entry for the VM's MAC on its tap (ifconfig BRIDGE
//     static TAP MAC): static entries never age and never move to another
//     port (if_bridge.c bridge_rtupdate), so a neighbour sending with the
//     MAC does not draw the VM's frames to its port;
//   - at most that one address on the tap (ifconfig BRIDGE ifmaxaddr TAP
//     1): once the member holds its static entry, frames from any other
//     source MAC are dropped, so the VM cannot pose as a neighbour either.
//
// vm-bhyve's private switches (vm switch private NAME on) keep guests from
// reaching each other at all; that is vm-bhyve's job, checked here only.
// vm-bhyve has no static, ifmaxaddr or ARP support of its own.
package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Binding is what ties one VM to its tap.
type Binding struct {
	Addr   netip.Addr
	MAC    net.HardwareAddr
	Bridge string // the switch's bridge interface, e.g. vm-public
	Tap    string // the VM's tap, e.g. tap3
}

func (b Binding) String() string {
	return fmt.Sprintf("address %s, MAC %s, tap %s on %s", b.Addr, b.MAC, b.Tap, b.Bridge)
}

// Record is the binding in one word, as kept in the VM's conf so that
// whoever destroys the VM (another process, a sweep after a crash) removes
// exactly what was added.
func (b Binding) Record() string {
	return strings.Join([]string{b.Addr.String(), b.MAC.String(), b.Bridge, b.Tap}, ",")
}

// ParseRecord reads Record's form back.
func ParseRecord(s string) (Binding, error) {
	f := strings.Split(s, ",")
	if len(f) != 4 {
		return Binding{}, fmt.Errorf("binding record %q: expected ADDRESS,MAC,BRIDGE,TAP", s)
	}
	addr, err := netip.ParseAddr(f[0])
	if err != nil {
		return Binding{}, fmt.Errorf("binding record %q: %w", s, err)
	}
	mac, err := net.ParseMAC(f[1])
	if err != nil {
		return Binding{}, fmt.Errorf("binding record %q: %w", s, err)
	}
	if !validIfname(f[2]) || !validIfname(f[3]) {
		return Binding{}, fmt.Errorf("binding record %q: bad interface name", s)
	}
	return Binding{Addr: addr, MAC: mac, Bridge: f[2], Tap: f[3]}, nil
}

// validIfname: FreeBSD interface names (IFNAMSIZ 16) of the characters
// ifconfig's own names use; anything else is not passed to a root command.
func validIfname(s string) bool {
	if s == "" || len(s) > 15 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// VMs is what Host needs from vm-bhyve (helpers/vmbhyve.Driver).
type VMs interface {
	Interfaces(ctx context.Context, name string) ([]vmbhyve.Interface, error)
	Switches(ctx context.Context) ([]vmbhyve.Switch, error)
	RunHost(ctx context.Context, command []string, args ...string) (stdout, stderr string, err error)
}

// Host runs the binding commands on the bhyve host.
type Host struct {
	VMs      VMs
	Arp      []string // arp_command, e.g. {"/usr/sbin/arp"}
	Ifconfig []string // ifconfig_command, e.g. {"/sbin/ifconfig"}
}

// BindError is a binding that could not be made: the VM must not be used.
type BindError struct {
	Step string
	Err  error
}

func (e *BindError) Error() string { return fmt.Sprintf("bind %s: %v", e.Step, e.Err) }
func (e *BindError) Unwrap() error { return e.Err }

// Locate finds the running VM's tap for the NIC with mac (vm info NAME:
// active-device) and its switch's bridge (vm switch list: IFACE). A switch
// that is not private is a configuration error: guests on it reach each
// other whatever the bindings.
func (h *Host) Locate(ctx context.Context, vm string, addr netip.Addr, mac net.HardwareAddr) (Binding, error) {
	ifs, err := h.VMs.Interfaces(ctx, vm)
	if err != nil {
		return Binding{}, &BindError{Step: "find the tap", Err: err}
	}
	var nic *vmbhyve.Interface
	for i := range ifs {
		if m, err := net.ParseMAC(ifs[i].MAC); err == nil && m.String() == mac.String() {
			nic = &ifs[i]
		}
	}
	if nic == nil {
		return Binding{}, &BindError{Step: "find the tap", Err: fmt.Errorf("vm info %s lists no interface with MAC %s", vm, mac)}
	}
	if nic.Device == "" || !validIfname(nic.Device) {
		return Binding{}, &BindError{Step: "find the tap", Err: fmt.Errorf("vm info %s shows no active tap for MAC %s (active-device %q)", vm, mac, nic.Device)}
	}
	sws, err := h.VMs.Switches(ctx)
	if err != nil {
		return Binding{}, &BindError{Step: "find the switch", Err: err}
	}
	for _, sw := range sws {
		if sw.Name != nic.Switch {
			continue
		}
		if !sw.Private {
			return Binding{}, failure.Configf("virtual switch %q is not private, so job VMs on it can reach each other; run `vm switch private %s on` (it applies to VMs started afterwards), or set isolation = false (unsafe: one job can then receive another's scripts and secrets)", sw.Name, sw.Name)
		}
		if !validIfname(sw.Iface) {
			return Binding{}, &BindError{Step: "find the switch", Err: fmt.Errorf("switch %s has no bridge interface (IFACE %q); only standard and manual switches can be bound", sw.Name, sw.Iface)}
		}
		return Binding{Addr: addr, MAC: mac, Bridge: sw.Iface, Tap: nic.Device}, nil
	}
	return Binding{}, &BindError{Step: "find the switch", Err: fmt.Errorf("vm switch list has no switch %q (network0_switch of %s)", nic.Switch, vm)}
}

// Bind adds the permanent ARP entry and the static bridge entry, limits the
// tap to that one address, and checks that the ARP entry is in place (arp
// -S reports success even when no interface holds the address).
func (h *Host) Bind(ctx context.Context, b Binding) error {
	if _, _, err := h.VMs.RunHost(ctx, h.Arp, "-S", b.Addr.String(), b.MAC.String()); err != nil {
		return &BindError{Step: "the address (arp -S)", Err: err}
	}
	if _, _, err := h.VMs.RunHost(ctx, h.Ifconfig, b.Bridge, "static", b.Tap, b.MAC.String(), "ifmaxaddr", b.Tap, "1"); err != nil {
		return &BindError{Step: "the MAC to the tap (ifconfig static, ifmaxaddr)", Err: err}
	}
	ok, err := h.permanent(ctx, b)
	if err != nil {
		return &BindError{Step: "check the address", Err: err}
	}
	if !ok {
		return &BindError{Step: "check the address", Err: fmt.Errorf("arp -n %s shows no permanent entry for %s after arp -S", b.Addr, b.MAC)}
	}
	return nil
}

// permanent reports whether the host's ARP table maps b.Addr to b.MAC
// permanently (arp -n ADDR: "? (ADDR) at MAC on IF permanent [...]").
func (h *Host) permanent(ctx context.Context, b Binding) (bool, error) {
	out, _, err := h.VMs.RunHost(ctx, h.Arp, "-n", b.Addr.String())
	var ce *vmbhyve.CommandError
	if errors.As(err, &ce) && ce.ExitCode == 1 && strings.Contains(ce.Stdout, "-- no entry") {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// One line per interface that has an entry for the address.
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[1] == "("+b.Addr.String()+")" && f[2] == "at" && sameMAC(f[3], b.MAC) && strings.Contains(l, " permanent") {
			return true, nil
		}
	}
	return false, nil
}

// Unbind removes what Bind added: the ARP entry, only while it still maps
// the address to this VM's MAC (a later job may own the address now), and
// the bridge entry of this VM's MAC. Entries already gone are not an error:
// destroying the tap (bhyve exiting) removes its static entry and its
// ifmaxaddr (bridge_delete_member flushes the member's entries).
func (h *Host) Unbind(ctx context.Context, b Binding) error {
	var errs []error
	if ours, err := h.permanent(ctx, b); err != nil {
		errs = append(errs, fmt.Errorf("unbind %s: %w", b.Addr, err))
	} else if ours {
		if _, _, err := h.VMs.RunHost(ctx, h.Arp, "-d", b.Addr.String()); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("unbind %s: %w", b.Addr, err))
		}
	}
	if _, _, err := h.VMs.RunHost(ctx, h.Ifconfig, b.Bridge, "deladdr", b.MAC.String()); err != nil && !notFound(err) {
		errs = append(errs, fmt.Errorf("unbind %s: %w", b.MAC, err))
	}
	return errors.Join(errs...)
}

// notFound: arp -d and ifconfig deladdr of an entry that is gone (ENOENT).
func notFound(err error) bool {
	var ce *vmbhyve.CommandError
	return errors.As(err, &ce) && ce.ExitCode == 1 && strings.Contains(ce.Stderr, "No such file or directory")
}

// sameMAC compares ether_ntoa's form (no leading zeros) with ours.
func sameMAC(s string, mac net.HardwareAddr) bool {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return false
	}
	for i, p := range parts {
		var b int
		if _, err := fmt.Sscanf(p, "%x", &b); err != nil || b != int(mac[i]) {
			return false
		}
	}
	return true
}
