package hostnet

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecordRoundTrip(t *testing.T) {
	mac, _ := net.ParseMAC("58:9c:fc:0a:bc:de")
	b := Binding{Addr: netip.MustParseAddr("10.0.0.7"), MAC: mac, Bridge: "vm-public", Tap: "tap3"}
	got, err := ParseRecord(b.Record())
	require.NoError(t, err)
	assert.Equal(t, b.String(), got.String())

	for _, bad := range []string{"", "10.0.0.7,58:9c:fc:0a:bc:de,vm-public", "10.0.0.7,zz,vm-public,tap3", "10.0.0.7,58:9c:fc:0a:bc:de,vm public,tap3", "10.0.0.7,58:9c:fc:0a:bc:de,vm-public,tap3;rm"} {
		t.Run(bad, func(t *testing.T) {
			_, err := ParseRecord(bad)
			assert.Error(t, err, "a record that could inject arguments into a root command is refused")
		})
	}
}

func TestSameMACAcceptsEtherNtoa(t *testing.T) {
	mac, _ := net.ParseMAC("58:9c:fc:0a:0b:de")
	assert.True(t, sameMAC("58:9c:fc:a:b:de", mac))
	assert.True(t, sameMAC("58:9c:fc:0a:0b:de", mac))
	assert.False(t, sameMAC("58:9c:fc:a:b:df", mac))
	assert.False(t, sameMAC("58:9c:fc:a:b", mac))
}
