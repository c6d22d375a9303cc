package vmbhyve

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Interface is one network-interface block of `vm info NAME`
// (info::guest_networking in lib/vm-info).
type Interface struct {
	Number int
	Switch string // virtual-switch, from networkN_switch
	MAC    string // fixed-mac-address, from networkN_mac
	// Device is the tap vm-bhyve created for the running guest
	// (active-device, found by its description vmnet/NAME/N/); "" while
	// the guest does not run.
	Device string
}

// Interfaces runs `vm info NAME` and returns its network interfaces.
func (d *Driver) Interfaces(ctx context.Context, name string) ([]Interface, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("info: %w", err)
	}
	stdout, _, err := d.vm(ctx, "info", name)
	if err != nil {
		return nil, fmt.Errorf("info %s: %w", name, err)
	}
	return ParseInterfaces(stdout), nil
}

// ParseInterfaces reads the network-interface blocks of `vm info` output.
// A block runs from its "  network-interface" line to the next blank line;
// its fields are "    key: value". info::guest_networking prints "-" for a
// value it could not find (no tap, no bridge).
func ParseInterfaces(out string) []Interface {
	var ifs []Interface
	var cur *Interface
	for _, line := range strings.Split(out, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "network-interface":
			ifs = append(ifs, Interface{Number: -1})
			cur = &ifs[len(ifs)-1]
			continue
		case t == "":
			cur = nil
			continue
		case cur == nil:
			continue
		}
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "-" {
			v = ""
		}
		switch k {
		case "number":
			if n, err := strconv.Atoi(v); err == nil {
				cur.Number = n
			}
		case "virtual-switch":
			cur.Switch = v
		case "fixed-mac-address":
			cur.MAC = v
		case "active-device":
			cur.Device = v
		}
	}
	return ifs
}

// Switch is one row of `vm switch list` (switch::list in lib/vm-switch).
type Switch struct {
	Name, Type string
	// Iface is the bridge (or netgraph/vale node) the switch's taps join.
	Iface string
	// Private: guests on the switch reach its other ports (the uplink,
	// the host) but not each other (if_bridge's private flag on each tap).
	Private bool
}

// Switches runs `vm switch list`.
func (d *Driver) Switches(ctx context.Context) ([]Switch, error) {
	stdout, _, err := d.vm(ctx, "switch", "list")
	if err != nil {
		return nil, fmt.Errorf("list switches: %w", err)
	}
	return ParseSwitches(stdout)
}

// ParseSwitches reads `vm switch list`: a header NAME TYPE IFACE ADDRESS
// PRIVATE MTU VLAN PORTS through `column -t`, so values hold no spaces and
// are never empty (the show functions print "-" or "n/a").
func ParseSwitches(out string) ([]Switch, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || len(strings.Fields(lines[0])) < 5 || strings.Fields(lines[0])[0] != "NAME" {
		return nil, fmt.Errorf("vm switch list: unexpected output %q", clip(out))
	}
	head := strings.Fields(lines[0])
	col := map[string]int{}
	for i, h := range head {
		col[h] = i
	}
	for _, h := range []string{"NAME", "TYPE", "IFACE", "PRIVATE"} {
		if _, ok := col[h]; !ok {
			return nil, fmt.Errorf("vm switch list: no %s column in %q", h, lines[0])
		}
	}
	var sws []Switch
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < len(head) {
			continue
		}
		sws = append(sws, Switch{
			Name: f[col["NAME"]], Type: f[col["TYPE"]], Iface: f[col["IFACE"]],
			Private: f[col["PRIVATE"]] == "yes",
		})
	}
	return sws, nil
}

// RunHost runs another host program the executor needs as root (arp,
// ifconfig) the way vm and sysrc run: argv only, behind Privilege, with
// the same diagnosis of a refused privilege prefix or a missing program.
// command is the program's argv prefix from the settings.
func (d *Driver) RunHost(ctx context.Context, command []string, args ...string) (string, string, error) {
	if len(command) == 0 {
		return "", "", fmt.Errorf("run host command %v: no program configured", args)
	}
	return d.run(ctx, command[0], command, args)
}
