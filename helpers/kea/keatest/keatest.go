// Package keatest writes Kea DHCPv4 memfile lease files for tests and
// benchmarks: realistic rows in the layouts Kea 2.2 and 2.4+ write, with a
// chosen MAC's lease at chosen rows.
package keatest

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Version selects the header layout.
type Version int

const (
	// V22 is the layout of Kea 2.0 and 2.2 (schema 2.1): ends at user_context.
	V22 Version = iota
	// V24 is the layout of Kea 2.4 and later (schema 3.0): adds pool_id.
	V24
	// VMin is the oldest layout Kea still reads: ends at hostname.
	VMin
)

// Header returns the header line, without '\n'.
func Header(v Version) string {
	const minimal = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname"
	switch v {
	case VMin:
		return minimal
	case V22:
		return minimal + ",state,user_context"
	}
	return minimal + ",state,user_context,pool_id"
}

// Row is one lease row.
type Row struct {
	Address       netip.Addr
	HWAddr        net.HardwareAddr // nil writes an empty hwaddr
	ClientID      string           // written as is
	ValidLifetime uint32
	Expire        int64 // Unix seconds
	SubnetID      uint32
	FQDNFwd       bool
	FQDNRev       bool
	Hostname      string // escaped on output like Kea does
	State         int
	UserContext   string // escaped on output
	PoolID        uint32
}

// AppendRow appends r in layout v, with a trailing '\n', formatted as Kea's
// CSVLeaseFile4::append writes it.
func AppendRow(b []byte, v Version, r Row) []byte {
	b = append(b, r.Address.String()...)
	b = append(b, ',')
	if r.HWAddr != nil {
		b = append(b, r.HWAddr.String()...)
	}
	b = append(b, ',')
	b = append(b, r.ClientID...)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(r.ValidLifetime), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, r.Expire, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(r.SubnetID), 10)
	b = append(b, ',')
	b = appendBool(b, r.FQDNFwd)
	b = append(b, ',')
	b = appendBool(b, r.FQDNRev)
	b = append(b, ',')
	b = appendEscaped(b, r.Hostname)
	if v != VMin {
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(r.State), 10)
		b = append(b, ',')
		b = appendEscaped(b, r.UserContext)
	}
	if v == V24 {
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(r.PoolID), 10)
	}
	return append(b, '\n')
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, '1')
	}
	return append(b, '0')
}

// appendEscaped escapes like CSVRow::escapeCharacters (src/lib/util/
// csv_file.cc) in current Kea: control bytes, bytes above '~', the separator
// and '&' become &#xHH. Kea 2.2 escaped only the separator and '&'; readers
// unescape both the same way.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == ',' || c == '&' {
			b = append(b, '&', '#', 'x', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

// Options describe a generated lease file.
type Options struct {
	Version Version
	// Rows is the number of data rows after the header.
	Rows int
	// MAC gets a lease row at each index in MACRows (0-based data rows, in
	// increasing order). The rows renew one address, each expiring later
	// than the one before, so the last is the MAC's current lease.
	MAC     net.HardwareAddr
	MACRows []int
	// Now anchors the expire times: other rows expire within an hour
	// either side of Now, the MAC's last row an hour after it.
	Now  time.Time
	Seed uint64
}

// Info describes the MAC's current lease in a generated file.
type Info struct {
	Address netip.Addr
	Line    int // 1-based line of its row; 0 if MACRows is empty
	Expire  time.Time
	Bytes   int64 // size of the file
}

// MACAddress is the address WriteFile leases to Options.MAC; other rows use
// 10.16.0.0/12, so they never override it.
var MACAddress = netip.MustParseAddr("10.0.0.2")

// WriteFile writes a lease file: the header, then Rows rows of random VMs
// (vm-bhyve MACs 58:9c:fc:xx:xx:xx with client ids "01:"+MAC), addresses
// reused every Rows/4 rows as in a file LFC has not compacted yet.
func WriteFile(w io.Writer, o Options) (Info, error) {
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	bw := bufio.NewWriterSize(w, 1<<16)
	var info Info
	var n int64
	line := append([]byte(Header(o.Version)), '\n')
	pool := max(1, min(o.Rows/4, 1<<20))
	macNext := 0
	for i := 0; i <= o.Rows; i++ {
		if i > 0 {
			line = line[:0]
			if macNext < len(o.MACRows) && o.MACRows[macNext] == i-1 {
				exp := o.Now.Add(time.Hour - time.Duration(len(o.MACRows)-1-macNext)*time.Minute).Unix()
				line = AppendRow(line, o.Version, Row{
					Address: MACAddress, HWAddr: o.MAC, ClientID: "01:" + o.MAC.String(),
					ValidLifetime: 3600, Expire: exp, SubnetID: 1, Hostname: "job-vm",
				})
				info = Info{Address: MACAddress, Line: i + 1, Expire: time.Unix(exp, 0)}
				macNext++
			} else {
				line = AppendRow(line, o.Version, randomRow(rng, i-1, pool, o.Now))
			}
		}
		k, err := bw.Write(line)
		n += int64(k)
		if err != nil {
			return info, err
		}
	}
	if macNext != len(o.MACRows) {
		return info, fmt.Errorf("keatest: MACRows %v not increasing or beyond Rows %d", o.MACRows, o.Rows)
	}
	info.Bytes = n
	return info, bw.Flush()
}

func randomRow(rng *rand.Rand, i, pool int, now time.Time) Row {
	a := 0x0a100000 + uint32(i%pool) + 2
	mac := net.HardwareAddr{0x58, 0x9c, 0xfc, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
	r := Row{
		Address:       netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}),
		HWAddr:        mac,
		ClientID:      "01:" + mac.String(),
		ValidLifetime: 3600,
		Expire:        now.Unix() + int64(rng.IntN(7200)) - 3600,
		SubnetID:      1,
		Hostname:      "ci-" + strconv.Itoa(i),
	}
	if rng.IntN(20) == 0 {
		r.ValidLifetime = 0 // released: Kea writes a copy with lifetime 0
	}
	return r
}
