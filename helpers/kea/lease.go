// Package kea finds the IPv4 address that ISC Kea's DHCPv4 server leased to a
// MAC address, by reading Kea's memfile lease files (kea-leases4.csv and the
// siblings that lease file cleanup, LFC, leaves behind) the way Kea itself
// loads them at startup.
//
// The rules, with the Kea source they come from:
//
//   - Columns are found by header name. Kea 2.0-2.2 write
//     address,...,hostname,state,user_context; 2.4+ add pool_id; files from
//     older versions may end at hostname, the minimum Kea accepts
//     (CSVLeaseFile4::initColumns, src/lib/dhcpsrv/csv_lease_file4.cc).
//     Unknown extra columns are ignored, as Kea ignores extra columns when
//     downgrading (VersionedCSVFile::validateHeader, versioned_csv_file.cc).
//   - Rows are folded by address: the later row wins, a row with
//     valid_lifetime 0 deletes the address, and an address is only inserted by
//     a row with valid_lifetime > 0 (LeaseFileLoader::load,
//     src/lib/dhcpsrv/lease_file_loader.h). The lease for a MAC is a folded
//     row whose hwaddr is that MAC, in state 0 and with expire in the future;
//     if there are several, the one that expires last.
//   - Files are read in Kea's load order: <file>.completed if it exists, else
//     <file>.2 then <file>.1; then always <file>
//     (Memfile_LeaseMgr::loadLeasesFromFiles, memfile_lease_mgr.cc).
//   - Blank lines are skipped (CSVFile::next, src/lib/util/csv_file.cc). A
//     final line without '\n' is still being written and is ignored.
//   - The MAC is matched as text in the spelling Kea writes (two hex digits
//     per octet, colons; HWAddr::toText, src/lib/dhcp/hwaddr.cc), ignoring
//     case.
//
// Kea itself insists on its columns in their order
// (VersionedCSVFile::validateHeader); reading by name accepts a reordered
// file too, which costs nothing and survives a future column insertion.
//
// Unreadable rows. Kea skips a row it cannot parse and carries on
// (LeaseFileLoader::load, with max-row-errors 0 meaning no limit). This
// package does the same for rows that cannot matter, so one corrupt row
// about some other VM does not break every lookup. But a row that cannot be
// read and either mentions the MAC, or is the last row for an address whose
// rows mention it, may be exactly the row that grants, renews, moves or ends
// the lease; answering without it could return a wrong address. Such a row
// makes the lookup fail with a *ParseError naming the file and line. Where
// this package's parser is stricter than Kea's (see parseRow), the same
// rule turns the difference into an error, never into a guess. A header
// that cannot be read fails the lookup: no row of that file can be trusted.
//
// Lookup speed: a lookup does not parse every row. It searches the file for
// the MAC text (case-insensitively, at memchr speed where the data allows),
// and only rows containing the MAC, plus later rows for the same addresses,
// are parsed. A Watch keeps its files open and reads only bytes appended
// since the previous poll. A full fold into a map (reference.go) is kept as
// the obviously correct version; the fuzz tests compare the two.
package kea

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// State is a lease state as Kea writes it in the state column (lease.h).
type State int

// Lease states. Kea 2.2-2.6 only write 0-2; 3 and 4 appeared in 2.7/3.0.
const (
	StateDefault          State = 0
	StateDeclined         State = 1
	StateExpiredReclaimed State = 2
	StateReleased         State = 3
	StateRegistered       State = 4
)

func (s State) String() string {
	switch s {
	case StateDefault:
		return "default"
	case StateDeclined:
		return "declined"
	case StateExpiredReclaimed:
		return "expired-reclaimed"
	case StateReleased:
		return "released"
	case StateRegistered:
		return "registered"
	}
	return fmt.Sprintf("state %d", int(s))
}

// Lease is one lease row as Kea wrote it.
type Lease struct {
	Address       netip.Addr
	HWAddr        net.HardwareAddr
	ClientID      string // as written, e.g. "01:58:9c:fc:01:02:03"; empty if none
	ValidLifetime time.Duration
	Expire        time.Time
	SubnetID      uint32
	Hostname      string // unescaped (&#xHH)
	State         State
	File          string // path of the file the row came from
	Line          int    // 1-based line number within File
}

// ErrNoLease is returned, wrapped, when no current lease exists for the MAC.
var ErrNoLease = errors.New("no current lease")

// ParseError reports a lease file line that cannot be read.
type ParseError struct {
	File string
	Line int // 1-based
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}
