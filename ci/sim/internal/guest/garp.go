package guest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// announce broadcasts a gratuitous ARP for the address just configured on
// ifname, as FreeBSD does whenever an interface gets an address (arp_ifinit
// in sys/netinet/if_ether.c sends a request with sender = target = the new
// address). Without it, the host's first connection attempt, made the
// moment Kea wrote the lease, can leave its ARP entry for the guest
// unresolved for a second (Linux's retrans_time), which no real FreeBSD
// guest would cause.
func announce(ifname string, addr netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	if !addr.Is4() || len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("announce %s on %s: need an IPv4 address and a MAC", addr, ifname)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	defer unix.Close(fd)

	ip := addr.As4()
	frame := make([]byte, 0, 42)
	frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // Ethernet broadcast
	frame = append(frame, ifi.HardwareAddr...)
	frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_ARP)
	frame = binary.BigEndian.AppendUint16(frame, 1)      // hardware type: Ethernet
	frame = binary.BigEndian.AppendUint16(frame, 0x0800) // protocol: IPv4
	frame = append(frame, 6, 4)
	frame = binary.BigEndian.AppendUint16(frame, 1) // request
	frame = append(frame, ifi.HardwareAddr...)
	frame = append(frame, ip[:]...)
	frame = append(frame, 0, 0, 0, 0, 0, 0)
	frame = append(frame, ip[:]...)

	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return unix.Sendto(fd, frame, 0, to)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
