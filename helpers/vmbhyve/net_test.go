package vmbhyve

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Output shapes of info::guest_networking and switch::list (lib/vm-info,
// lib/vm-switch in vm-bhyve).
func TestParseInterfaces(t *testing.T) {
	out := `------------------------
Virtual Machine: ci-1
------------------------
  state: running (4242)

  network-interface
    number: 0
    emulation: virtio-net
    virtual-switch: public
    fixed-mac-address: 58:9c:fc:0a:bc:de
    fixed-device: -
    active-device: tap3
    desc: vmnet/ci-1/0/public
    mtu: 1500
    bridge: -
    bytes-in: 10 (10.000B)

  network-interface
    number: 1
    emulation: virtio-net
    virtual-switch: other
    active-device: -
`
	ifs := ParseInterfaces(out)
	require.Len(t, ifs, 2)
	assert.Equal(t, Interface{Number: 0, Switch: "public", MAC: "58:9c:fc:0a:bc:de", Device: "tap3"}, ifs[0])
	assert.Equal(t, Interface{Number: 1, Switch: "other"}, ifs[1])
}

func TestParseSwitches(t *testing.T) {
	out := "NAME    TYPE      IFACE      ADDRESS  PRIVATE  MTU  VLAN  PORTS\n" +
		"public  manual    vm-public  n/a      yes      n/a  n/a   n/a\n" +
		"lab     standard  vm-lab     -        no       -    -     em0\n"
	sws, err := ParseSwitches(out)
	require.NoError(t, err)
	assert.Equal(t, []Switch{
		{Name: "public", Type: "manual", Iface: "vm-public", Private: true},
		{Name: "lab", Type: "standard", Iface: "vm-lab", Private: false},
	}, sws)
	_, err = ParseSwitches("vm: ERROR: something\n")
	assert.Error(t, err)
}
