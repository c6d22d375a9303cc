package vmbhyve

import "gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"

// Command lists in the order cmd::find walks them (lib/vm-cmd
// CMD_VALID_LIST); the order decides which prefixes are ambiguous.
var cmdList16 = []string{
	"init", "switch", "datastore", "image", "get", "set", "list", "create", "destroy", "rename",
	"install", "start", "stop", "restart", "add", "reset", "poweroff", "startall", "stopall",
	"console", "iso", "img", "configure", "passthru", "_run", "info", "clone", "snapshot",
	"rollback", "migrate", "version", "usage",
}

var cmdList17 = append(append([]string{}, cmdList16...), "edit", "suspend", "suspendall", "discard")

func (v *vm) cmdList() []string {
	if v.cfg.VersionAtLeast17() {
		return cmdList17
	}
	return cmdList16
}

// versionLine is util::version.
func (v *vm) versionLine() string {
	switch v.cfg.VersionMode {
	case simstate.Version17:
		return "vm-bhyve: Bhyve virtual machine management v1.7.5"
	case simstate.Version18:
		return "vm-bhyve: Bhyve virtual machine management v1.8-devel"
	default:
		return "vm-bhyve: Bhyve virtual machine management v1.6-devel (rev. 106001)"
	}
}

// usageText is the heredoc of util::usage (the version line comes first).
func (v *vm) usageText() string {
	if v.cfg.VersionAtLeast17() {
		return usage17
	}
	return usage16
}

const usage16 = `Usage: vm ...
    version
    init
    set [setting=value] [...]
    get [all|setting] [...]
    switch list
    switch info [name] [...]
    switch create [-t type] [-i interface] [-n vlan-id] [-m mtu] [-a address/prefix-len] [-b bridge] [-p] <name>
    switch vlan <name> <vlan|0>
    switch nat <name> <on|off>
    switch private <name> <on|off>
    switch add <name> <interface>
    switch remove <name> <interface>
    switch destroy <name>
    datastore list
    datastore add <name> <spec>
    datastore remove <name>
    datastore add <name> <path>
    list [-r]
    info [name] [...]
    create [-d datastore] [-t template] [-s size] [-m memory] [-c vCPUs] [-i vm-image] [-C -k pubkeys] <name>
    install [-fi] <name> <iso>
    start [-fi] <name> [...]
    stop <name> [...]
    restart <name>
    console <name> [com1|com2]
    configure <name>
    rename <name> <new-name>
    add [-d device] [-t type] [-s size|switch] <name>
    startall
    stopall
    reset  [-f] <name>
    poweroff [-f] <name>
    destroy [-f] <name>
    passthru
    clone <name[@snapshot]> <new-name>
    snapshot [-f] <name[@snapshot]>
    rollback [-r] <name@snapshot>
    iso [url]
    img [url]
    image list
    image create [-d description] [-u] <name>
    image destroy <uuid>
    image provision [-d datastore] <uuid> <newname>
`

const usage17 = `Usage: vm ...
    version
    init
    set [setting=value] [...]
    get [all|setting] [...]
    switch list
    switch info [name] [...]
    switch create [-t type] [-i interface] [-n vlan-id] [-m mtu] [-a address/prefix-len] [-b bridge] [-p] <name>
    switch vlan <name> <vlan|0>
    switch nat <name> <on|off>
    switch address <name> <a.b.c.d/xx|none>
    switch private <name> <on|off>
    switch add <name> <interface>
    switch remove <name> <interface>
    switch destroy <name>
    datastore list
    datastore add <name> <spec>
    datastore remove <name>
    datastore add <name> <path>
    list [-r]
    info [name] [...]
    create [-d datastore] [-t template] [-s size] [-m memory] [-c vCPUs] [-i vm-image]
           [-C [-k pubkey-file | -u user-data-file] [-n "netconfig"]] <name>
    install [-fi] <name> <iso>
    start [-fi] <name> [...]
    stop <name> [...]
    restart <name>
    suspend <name> [...]
    discard [-f] <name>
    console [-w] <name> [com1|com2]
    configure <name>
    edit <name>
    rename <name> <new-name>
    add [-d device] [-t type] [-s size|switch] <name>
    startall
    stopall [-f]
    suspendall [-f]
    reset  [-f] <name>
    poweroff [-f] <name>
    destroy [-f] <name>
    passthru
    clone <name[@snapshot]> <new-name>
    snapshot [-f] <name[@snapshot]>
    rollback [-r] <name@snapshot>
    iso [-46] [url]
    img [-46[ [url]
    image list
    image create [-d description] [-u] <name>
    image destroy <uuid>
    image provision [-d datastore] <uuid> <newname>
`
