package testbed

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// JobVM is the name of the VM that runs job id (JobVMName puts the job ID
// between the runner's slug and the slot: ...-ID-SLOT).
func (tb *Testbed) JobVM(ctx context.Context, t testing.TB, id int64) string {
	t.Helper()
	re := regexp.MustCompile(`-` + strconv.FormatInt(id, 10) + `-[0-9]+$`)
	for _, name := range tb.VMs(ctx, t) {
		if re.MatchString(name) {
			return name
		}
	}
	t.Fatalf("no VM for job %d in vm list: %v", id, tb.VMs(ctx, t))
	return ""
}

// ArpEntry is the host's arp(8) line for addr ("? (ADDR) at MAC on IF
// [permanent] ..."), or arp's own "no entry" message: what the host's next
// connection to addr will use.
func (tb *Testbed) ArpEntry(ctx context.Context, t testing.TB, addr netip.Addr) string {
	t.Helper()
	out, _ := tb.Host.Command(ctx, tb.Host.ArpCommand(), "-n", addr.String()).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// WaitArpEntry waits until the host's arp(8) line for addr shows mac
// (arp prints it as ether_ntoa does, without leading zeros) and returns
// the line; the test fails with the last line seen when ctx ends.
func (tb *Testbed) WaitArpEntry(ctx context.Context, t testing.TB, addr netip.Addr, mac string) string {
	t.Helper()
	want, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for {
		if l := tb.ArpEntry(ctx, t, addr); ctx.Err() == nil {
			line = l
		}
		if m := arpAtRE.FindStringSubmatch(line); m != nil && sameMAC(m[1], want) {
			return line
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the host's ARP entry for %s never showed %s; last: %s", addr, mac, line)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var arpAtRE = regexp.MustCompile(` at ([0-9a-f:]+) on `)

// sameMAC compares ether_ntoa's form ("58:9c:fc:e:6f:e2") with mac.
func sameMAC(ntoa string, mac net.HardwareAddr) bool {
	parts := strings.Split(ntoa, ":")
	if len(parts) != len(mac) {
		return false
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil || byte(v) != mac[i] {
			return false
		}
	}
	return true
}
