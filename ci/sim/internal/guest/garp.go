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
func announce(ifname string, addr netip.Addr) error { return arpRequest(ifname, addr, addr) }

// arpRequest broadcasts "who has target, tell sender" from ifname's MAC.
// With target the host's address it is what any packet from sender to the
// host starts with, and the host learns sender at our MAC from it (Linux
// arp_process and FreeBSD in_arpinput create the entry for a request
// addressed to them; a gratuitous one only updates an existing entry).
func arpRequest(ifname string, sender, target netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	if !sender.Is4() || !target.Is4() || len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("announce %s on %s: need IPv4 addresses and a MAC", sender, ifname)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	defer unix.Close(fd)

	ip, tip := sender.As4(), target.As4()
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
	frame = append(frame, tip[:]...)

	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return unix.Sendto(fd, frame, 0, to)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
