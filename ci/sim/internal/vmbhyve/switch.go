package vmbhyve

import (
	"fmt"
	"os"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/sysrc"
)

// vmSwitch is cmd::parse_switch (lib/vm-cmd) for the two subcommands an
// operator of the executor needs: list and private. The others print the
// simulator's "not supported" error.
func (v *vm) vmSwitch(args []string) error {
	user := ""
	if len(args) > 0 {
		user = args[0]
	}
	// cmd::find over "create,list,destroy,add,remove,vlan,nat,address,private,info";
	// no match is util::usage.
	sub, ok, err := v.find(user, []string{"create", "list", "destroy", "add", "remove", "vlan", "nat", "address", "private", "info"})
	if err != nil {
		return err
	}
	if !ok {
		return v.usage()
	}
	switch sub {
	case "list":
		return v.switchList()
	case "private":
		return v.switchPrivate(args[1:])
	default:
		return v.errf("'switch %s' is not supported by the bhyve simulator", sub)
	}
}

// switchList is switch::list: one row per name in switch_list, through
// `column -ts^`. Only manual (the simulator's own switch) and standard
// switches exist here; their show functions print the columns
// switch::manual::show and switch::standard::show print.
func (v *vm) switchList() error {
	core := v.coreConf()
	const f = "%s^%s^%s^%s^%s^%s^%s^%s"
	lines := []string{fmt.Sprintf(f, "NAME", "TYPE", "IFACE", "ADDRESS", "PRIVATE", "MTU", "VLAN", "PORTS")}
	for _, sw := range strings.Fields(core.str("switch_list", "")) {
		priv := core.str("private_"+sw, "no")
		switch typ := core.str("type_"+sw, "standard"); typ {
		case "manual":
			lines = append(lines, fmt.Sprintf(f, sw, "manual", core.str("bridge_"+sw, ""), "n/a", priv, "n/a", "n/a", "n/a"))
		default:
			// switch::standard::show prints "-" for unset address, mtu,
			// vlan and ports.
			lines = append(lines, fmt.Sprintf(f, sw, typ, "vm-"+sw,
				orDefault(core.str("addr_"+sw, ""), "-"), priv,
				orDefault(core.str("mtu_"+sw, ""), "-"), orDefault(core.str("vlan_"+sw, ""), "-"),
				orDefault(core.str("ports_"+sw, ""), "-")))
		}
	}
	fmt.Fprint(v.stdout, columnT(lines, "^"))
	return nil
}

// switchPrivate is switch::private: `vm switch private NAME on|off` stores
// private_NAME=yes|no in system.conf (config::core::set); it affects only
// guests started afterwards, whose taps switch::standard::provision marks
// private.
func (v *vm) switchPrivate(args []string) error {
	if len(args) < 2 || args[0] == "" || args[1] == "" {
		return v.usage()
	}
	name, val := args[0], args[1]
	// switch::type only fails for an empty name: an unknown switch counts
	// as "standard" and gets the setting, as in vm-bhyve.
	switch v.coreConf().str("type_"+name, "standard") {
	case "standard", "manual", "vxlan":
	case "netgraph":
		return v.errf("unable to configure private mode on netgraph switches")
	case "vale":
		return v.errf("unable to configure private mode on vale switches")
	default:
		return v.errf("unable to configure switch of unknown type")
	}
	priv := "no"
	if yesno(val) {
		priv = "yes"
	}
	path := v.cfg.SystemConf()
	if b, _ := os.ReadFile(path); len(b) > 0 && b[len(b)-1] != '\n' {
		_ = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if err := sysrc.Set([]string{path}, "private_"+name, priv); err != nil {
		return v.errf("%v", err)
	}
	return nil
}

// switchPrivateOn is switch::is_private: util::yesno of private_NAME.
func (v *vm) switchPrivateOn(sw string) bool { return v.coreConf().yesno("private_"+sw, "") }
