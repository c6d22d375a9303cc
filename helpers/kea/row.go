package kea

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Columns Kea requires: every schema since 1.0 has them, and Kea refuses a
// header that ends before hostname (setMinimumValidColumns("hostname") in
// csv_lease_file4.cc).
var requiredColumns = []string{
	"address", "hwaddr", "client_id", "valid_lifetime", "expire",
	"subnet_id", "fqdn_fwd", "fqdn_rev", "hostname",
}

// header maps the columns this package reads to their index; -1 means the
// optional column is absent and Kea's default applies.
type header struct {
	n                                        int // number of columns
	address, hwaddr, clientID, valid, expire int
	subnetID, fqdnFwd, fqdnRev, hostname     int
	state, userContext, poolID               int
}

func parseHeader(line []byte) (*header, string) {
	h := &header{state: -1, userContext: -1, poolID: -1}
	idx := map[string]int{}
	names := strings.Split(string(line), ",")
	for i, name := range names {
		if _, dup := idx[name]; dup {
			return nil, fmt.Sprintf("header has column %q twice", name)
		}
		idx[name] = i
	}
	for _, name := range requiredColumns {
		if _, ok := idx[name]; !ok {
			return nil, fmt.Sprintf("header lacks column %q", name)
		}
	}
	h.n = len(names)
	h.address, h.hwaddr, h.clientID = idx["address"], idx["hwaddr"], idx["client_id"]
	h.valid, h.expire, h.subnetID = idx["valid_lifetime"], idx["expire"], idx["subnet_id"]
	h.fqdnFwd, h.fqdnRev, h.hostname = idx["fqdn_fwd"], idx["fqdn_rev"], idx["hostname"]
	// state, user_context and pool_id came with schema 2.0, 2.1 and 3.0;
	// Kea fills in "0", "" and "0" for files that predate them
	// (initColumns in csv_lease_file4.cc).
	for name, p := range map[string]*int{"state": &h.state, "user_context": &h.userContext, "pool_id": &h.poolID} {
		if i, ok := idx[name]; ok {
			*p = i
		}
	}
	return h, ""
}

// keyOf returns the raw address field of a row, the text rows are folded by.
// Kea folds by the parsed address, but netip's strict parser accepts exactly
// one spelling per IPv4 address (no leading zeros), so for rows that parse,
// equal text means equal address.
func (h *header) keyOf(line []byte) ([]byte, bool) {
	for i := 0; i < h.address; i++ {
		c := bytes.IndexByte(line, ',')
		if c < 0 {
			return nil, false
		}
		line = line[c+1:]
	}
	if c := bytes.IndexByte(line, ','); c >= 0 {
		line = line[:c]
	}
	return line, true
}

// row is a parsed lease row; lease fields File and Line are filled by the
// caller.
type row struct {
	lease  Lease
	hwText string // hwaddr column as written
	valid  uint32
}

// parseRow checks a row the way CSVLeaseFile4::next does and returns a
// message saying what is wrong if Kea would skip it. Where this is stricter
// than Kea (expire beyond int64, JSON that Kea's parser might accept), the
// row is reported rather than guessed at.
func parseRow(h *header, line []byte) (row, string) {
	var r row
	fields := strings.Split(string(line), ",")
	if len(fields) != h.n {
		// VersionedCSVFile::next: rows must match the header's width.
		return r, fmt.Sprintf("row has %d fields, header has %d", len(fields), h.n)
	}
	addr, err := netip.ParseAddr(fields[h.address])
	if err != nil || !addr.Is4() {
		return r, fmt.Sprintf("address %q is not an IPv4 address", fields[h.address])
	}
	r.lease.Address = addr
	r.hwText = fields[h.hwaddr]
	// Kea would also read one-digit octets ("58:9c:fc:a:b:c") but only ever
	// writes two (HWAddr::toText); the MAC is matched as text, so another
	// spelling is reported rather than taken for a different MAC.
	hw, ok := decodeSeparatedHex(r.hwText, ':')
	if ok && len(r.hwText) != 3*len(hw)-1 && len(hw) > 0 {
		ok = false
	}
	if !ok || len(hw) > 20 { // HWAddr::MAX_HWADDR_LEN
		return r, fmt.Sprintf("hwaddr %q is not a hardware address", r.hwText)
	}
	if len(hw) > 0 {
		r.lease.HWAddr = net.HardwareAddr(hw)
	}
	cid := fields[h.clientID]
	if cid != "" {
		// ClientId::fromText; a client id has 2 to 128 bytes (duid.h).
		b, ok := decodeFormattedHex(cid)
		if !ok || len(b) < 2 || len(b) > 128 {
			return r, fmt.Sprintf("client_id %q is not a client identifier", cid)
		}
	}
	r.lease.ClientID = cid
	valid, msg := parseUint(fields[h.valid], "valid_lifetime", 32)
	if msg != "" {
		return r, msg
	}
	r.valid = uint32(valid)
	r.lease.ValidLifetime = time.Duration(valid) * time.Second
	// Kea reads expire as uint64 since 2.0; a value beyond int64 cannot be a
	// real time, so it is reported instead of wrapped.
	expire, msg := parseUint(fields[h.expire], "expire", 63)
	if msg != "" {
		return r, msg
	}
	r.lease.Expire = time.Unix(int64(expire), 0)
	subnet, msg := parseUint(fields[h.subnetID], "subnet_id", 32)
	if msg != "" {
		return r, msg
	}
	r.lease.SubnetID = uint32(subnet)
	for _, c := range []struct {
		name string
		i    int
	}{{"fqdn_fwd", h.fqdnFwd}, {"fqdn_rev", h.fqdnRev}} {
		// boost::lexical_cast<bool> accepts exactly "0" and "1".
		if v := fields[c.i]; v != "0" && v != "1" {
			return r, fmt.Sprintf("%s %q is not 0 or 1", c.name, v)
		}
	}
	r.lease.Hostname = unescape(fields[h.hostname])
	if h.state >= 0 {
		st, msg := parseUint(fields[h.state], "state", 32)
		if msg != "" {
			return r, msg
		}
		r.lease.State = State(st)
	}
	if h.userContext >= 0 {
		// readContext: empty, or a JSON map.
		if uc := unescape(fields[h.userContext]); uc != "" && !kindOfJSONObject(uc) {
			return r, fmt.Sprintf("user_context %q is not a JSON object", fields[h.userContext])
		}
	}
	if h.poolID >= 0 {
		if _, msg := parseUint(fields[h.poolID], "pool_id", 32); msg != "" {
			return r, msg
		}
	}
	// CSVLeaseFile4::next rejects a lease without hwaddr and client id
	// unless it is declined (2.2 and later).
	if len(hw) == 0 && cid == "" && r.lease.State != StateDeclined {
		return r, "row has neither hwaddr nor client_id (allowed only for declined leases)"
	}
	return r, ""
}

// kindOfJSONObject reports whether s is a JSON object that Kea's parser
// (Element::fromJSON) accepts, as far as checked against kea-lfc 2.2: Go's
// json.Valid plus Kea's limits, which reject integers beyond int64, floats
// beyond float64 and unpaired UTF-16 surrogate escapes. Escaped surrogates
// are rejected even when paired; that only makes such rows errors.
func kindOfJSONObject(s string) bool {
	t := strings.TrimLeft(s, " \t\r\n")
	if !strings.HasPrefix(t, "{") || !json.Valid([]byte(s)) {
		return false
	}
	for i := 0; i+3 < len(s); i++ {
		if s[i] == '\\' && s[i+1] == 'u' && s[i+2]|0x20 == 'd' && strings.IndexByte("89abAB", s[i+3]) >= 0 {
			return false
		}
	}
	d := json.NewDecoder(strings.NewReader(t))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if err != nil {
			return err == io.EOF
		}
		if n, ok := tok.(json.Number); ok {
			if strings.ContainsAny(string(n), ".eE") {
				if _, err := strconv.ParseFloat(string(n), 64); err != nil {
					return false
				}
			} else if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
				return false
			}
		}
	}
}

func parseUint(s, name string, bits int) (uint64, string) {
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Sprintf("%s %q is out of range", name, s)
		}
		return 0, fmt.Sprintf("%s %q is not a number", name, s)
	}
	return v, ""
}

// decodeSeparatedHex decodes "a:bb:0c" style text: one or two hex digits per
// octet, no empty octets (decodeSeparatedHexString in Kea's util/str). The
// empty string decodes to no bytes.
func decodeSeparatedHex(s string, sep byte) ([]byte, bool) {
	if s == "" {
		return nil, true
	}
	parts := strings.Split(s, string(sep))
	out := make([]byte, 0, len(parts))
	for _, p := range parts {
		if len(p) == 0 || len(p) > 2 {
			return nil, false
		}
		var v byte
		for i := 0; i < len(p); i++ {
			d, ok := hexDigit(p[i])
			if !ok {
				return nil, false
			}
			v = v<<4 | d
		}
		out = append(out, v)
	}
	return out, true
}

// decodeFormattedHex accepts what Kea's decodeFormattedHexString does:
// colon-separated, space-separated, or plain hex with an optional 0x.
func decodeFormattedHex(s string) ([]byte, bool) {
	switch {
	case strings.IndexByte(s, ':') >= 0:
		return decodeSeparatedHex(s, ':')
	case strings.IndexByte(s, ' ') >= 0:
		return decodeSeparatedHex(s, ' ')
	}
	if len(s) > 2 && s[:2] == "0x" {
		s = s[2:]
	}
	if len(s)%2 == 1 {
		s = "0" + s
	}
	out := make([]byte, 0, len(s)/2)
	for i := 0; i < len(s); i += 2 {
		a, ok1 := hexDigit(s[i])
		b, ok2 := hexDigit(s[i+1])
		if !ok1 || !ok2 {
			return nil, false
		}
		out = append(out, a<<4|b)
	}
	return out, true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescape reverses CSVRow::escapeCharacters: "&#xHH" becomes the byte 0xHH.
// Like Kea's unescapeCharacters, a tag without two hex digits stays as is.
func unescape(s string) string {
	if !strings.Contains(s, "&#x") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "&#x") && i+5 <= len(s) {
			hi, ok1 := hexDigit(s[i+3])
			lo, ok2 := hexDigit(s[i+4])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 5
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// containsFold reports whether s contains needle (lowercase ASCII) ignoring
// ASCII case.
func containsFold(s, needle []byte) bool {
	for i := 0; i+len(needle) <= len(s); i++ {
		if equalFold(s[i:i+len(needle)], needle) {
			return true
		}
	}
	return false
}

// equalFold compares s with needle (lowercase ASCII) ignoring ASCII case;
// len(s) must be len(needle).
func equalFold(s, needle []byte) bool {
	for i, c := range needle {
		b := s[i]
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != c {
			return false
		}
	}
	return true
}
