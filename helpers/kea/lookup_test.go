package kea

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	h22  = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context"
	h24  = h22 + ",pool_id"
	hMin = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname"

	testMAC = "58:9c:fc:0a:0b:0c"
	otherMC = "58:9c:fc:99:88:77"
)

var testNow = time.Unix(1700000000, 0)

// r22 is a Kea 2.2 row; expire is relative to testNow.
func r22(addr, hw string, valid int, expireIn time.Duration, state int) string {
	return fmt.Sprintf("%s,%s,01:%s,%d,%d,1,0,0,vm-%s,%d,", addr, hw, hw, valid, testNow.Add(expireIn).Unix(), strings.ReplaceAll(addr, ".", "-"), state)
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func mustMAC(t testing.TB, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	require.NoError(t, err)
	return m
}

// writeSet writes lease files into a new directory; keys are suffixes of
// kea-leases4.csv ("" is the current file). It returns the current path.
func writeSet(t *testing.T, files map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kea-leases4.csv")
	for suffix, content := range files {
		require.NoError(t, os.WriteFile(path+suffix, []byte(content), 0o644))
	}
	return path
}

func TestLookup(t *testing.T) {
	mine := r22("10.0.0.5", testMAC, 3600, time.Hour, 0)
	tests := []struct {
		name     string
		files    map[string]string
		query    string // MAC to look up; testMAC if empty
		wantAddr string // "" means ErrNoLease
		wantFile string // suffix
		wantLine int
	}{
		{name: "kea 2.2 header", files: map[string]string{"": lines(h22, mine)}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "kea 2.4 header with pool_id", files: map[string]string{"": lines(h24, mine+",7")}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "minimal header ending at hostname", files: map[string]string{"": lines(hMin,
			"10.0.0.5,58:9c:fc:0a:0b:0c,,3600,1700003600,1,0,0,vm")}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "reordered columns and an unknown column", files: map[string]string{"": lines(
			"hostname,expire,hwaddr,future,valid_lifetime,client_id,state,fqdn_fwd,fqdn_rev,subnet_id,address",
			"vm,1700000100,58:9c:fc:99:88:77,x,3600,,0,0,0,1,10.0.0.5",
			"vm,1700003600,58:9c:fc:0a:0b:0c,x,3600,,0,0,0,1,10.0.0.6")}, wantAddr: "10.0.0.6", wantLine: 3},
		{name: "uppercase MAC in the query", query: "58:9C:FC:0A:0B:0C", files: map[string]string{"": lines(h22, mine)}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "uppercase MAC in the file", files: map[string]string{"": lines(h22, r22("10.0.0.5", "58:9C:FC:0A:0B:0C", 3600, time.Hour, 0))}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "last row wins: renewal", files: map[string]string{"": lines(h22,
			r22("10.0.0.5", testMAC, 3600, time.Minute, 0),
			r22("10.0.0.9", otherMC, 3600, time.Hour, 0),
			r22("10.0.0.5", testMAC, 3600, 2*time.Hour, 0))}, wantAddr: "10.0.0.5", wantLine: 4},
		{name: "last row wins: expired renewal hides an earlier valid row", files: map[string]string{"": lines(h22,
			mine, r22("10.0.0.5", testMAC, 3600, -time.Minute, 0))}},
		{name: "valid_lifetime 0 deletes", files: map[string]string{"": lines(h22, mine, r22("10.0.0.5", testMAC, 0, 0, 0))}},
		{name: "deleted then leased again", files: map[string]string{"": lines(h22,
			mine, r22("10.0.0.5", testMAC, 0, 0, 0), mine)}, wantAddr: "10.0.0.5", wantLine: 4},
		{name: "valid_lifetime 0 for an unknown address inserts nothing", files: map[string]string{"": lines(h22,
			r22("10.0.0.5", testMAC, 0, time.Hour, 0))}},
		{name: "address reused by another MAC: stale row not returned", files: map[string]string{"": lines(h22,
			mine, r22("10.0.0.5", otherMC, 3600, time.Hour, 0))}},
		{name: "expired lease", files: map[string]string{"": lines(h22, r22("10.0.0.5", testMAC, 3600, -time.Second, 0))}},
		{name: "expire equal to now is expired", files: map[string]string{"": lines(h22, r22("10.0.0.5", testMAC, 3600, 0, 0))}},
		{name: "declined", files: map[string]string{"": lines(h22, r22("10.0.0.5", testMAC, 3600, time.Hour, 1))}},
		{name: "expired-reclaimed", files: map[string]string{"": lines(h22, r22("10.0.0.5", testMAC, 3600, time.Hour, 2))}},
		{name: "two valid leases: newest expire wins", files: map[string]string{"": lines(h22,
			r22("10.0.0.6", testMAC, 3600, 2*time.Hour, 0), r22("10.0.0.5", testMAC, 3600, time.Hour, 0))}, wantAddr: "10.0.0.6", wantLine: 2},
		{name: "MAC only inside client_id", files: map[string]string{"": lines(h22,
			"10.0.0.5,00:11:22:33:44:55,01:58:9c:fc:0a:0b:0c,3600,1700003600,1,0,0,,0,")}},
		{name: "MAC inside client_id of a later row moves the address away", files: map[string]string{"": lines(h22,
			mine, "10.0.0.5,00:11:22:33:44:55,01:58:9c:fc:0a:0b:0c,3600,1700003600,1,0,0,,0,")}},
		{name: "half-written last line is ignored", files: map[string]string{"": lines(h22, mine) +
			r22("10.0.0.5", otherMC, 3600, time.Hour, 0)}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "half-written header", files: map[string]string{"": h22}},
		{name: "empty file", files: map[string]string{"": ""}},
		{name: "blank lines are skipped", files: map[string]string{"": "\n" + lines(h22, "", mine, "")}, wantAddr: "10.0.0.5", wantLine: 4},
		{name: "unreadable rows of other leases are skipped", files: map[string]string{"": lines(h22,
			"10.0.0.7,zz,,3600,1700003600,1,0,0,,0,", "garbage", mine, "10.0.0.8,00:11:22:33:44:55,,abc,1,1,0,0,,0,")}, wantAddr: "10.0.0.5", wantLine: 4},
		{name: "unreadable row for the address overridden by a readable one", files: map[string]string{"": lines(h22,
			"10.0.0.5,58:9c:fc:0a:0b:0c,,x,1,1,0,0,,0,", mine)}, wantAddr: "10.0.0.5", wantLine: 3},

		// LFC stages (Memfile_LeaseMgr::loadLeasesFromFiles, lfc_controller.cc).
		{name: "lfc: only current", files: map[string]string{"": lines(h22, mine)}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "lfc: lease in .1", files: map[string]string{".1": lines(h22, mine), "": lines(h22)}, wantAddr: "10.0.0.5", wantFile: ".1", wantLine: 2},
		{name: "lfc: lease in .2 with .1 and current", files: map[string]string{".2": lines(h22, mine),
			".1": lines(h22, r22("10.0.0.9", otherMC, 3600, time.Hour, 0)), "": lines(h22)}, wantAddr: "10.0.0.5", wantFile: ".2", wantLine: 2},
		{name: "lfc: lease in .1 with .2 and current", files: map[string]string{".2": lines(h22),
			".1": lines(h22, mine), "": lines(h22)}, wantAddr: "10.0.0.5", wantFile: ".1", wantLine: 2},
		{name: "lfc: lease in current with .2 and .1", files: map[string]string{".2": lines(h22),
			".1": lines(h22), "": lines(h22, mine)}, wantAddr: "10.0.0.5", wantLine: 2},
		{name: "lfc: .1 overrides .2", files: map[string]string{".2": lines(h22, mine),
			".1": lines(h22, r22("10.0.0.5", otherMC, 3600, time.Hour, 0)), "": lines(h22)}},
		{name: "lfc: current overrides .1", files: map[string]string{".1": lines(h22, mine),
			"": lines(h22, r22("10.0.0.5", testMAC, 0, 0, 0))}},
		{name: "lfc: lease in .completed", files: map[string]string{".completed": lines(h22, mine), ".1": lines(h22), "": lines(h22)},
			wantAddr: "10.0.0.5", wantFile: ".completed", wantLine: 2},
		{name: "lfc: lease in current with .completed and .1", files: map[string]string{".completed": lines(h22), ".1": lines(h22), "": lines(h22, mine)},
			wantAddr: "10.0.0.5", wantLine: 2},
		{name: "lfc: .completed present means .2 and .1 are ignored", files: map[string]string{".completed": lines(h22),
			".2": lines(h22, mine), ".1": lines(h22, mine), "": lines(h22)}},
		{name: "lfc: .completed hides a deletion in .1", files: map[string]string{".completed": lines(h22, mine),
			".1": lines(h22, r22("10.0.0.5", testMAC, 0, 0, 0)), "": lines(h22)}, wantAddr: "10.0.0.5", wantFile: ".completed", wantLine: 2},
		{name: "lfc: older schema in .2, newer in current", files: map[string]string{".2": lines(hMin, "10.0.0.5,58:9c:fc:0a:0b:0c,,3600,1700003600,1,0,0,vm"),
			"": lines(h24, r22("10.0.0.6", otherMC, 3600, time.Hour, 0)+",0")}, wantAddr: "10.0.0.5", wantFile: ".2", wantLine: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeSet(t, tt.files)
			query := tt.query
			if query == "" {
				query = testMAC
			}
			l, err := NewReader(path).Lookup(context.Background(), mustMAC(t, query), testNow)

			var ref []refFile
			for _, s := range []string{".completed", ".2", ".1", ""} {
				if c, ok := tt.files[s]; ok && !(tt.files[".completed"] != "" && (s == ".2" || s == ".1")) {
					ref = append(ref, refFile{path + s, []byte(c)})
				}
			}
			refL, refErr := referenceLookup(ref, mustMAC(t, query), testNow)

			if tt.wantAddr == "" {
				require.ErrorIs(t, err, ErrNoLease)
				require.ErrorIs(t, refErr, ErrNoLease)
				return
			}
			require.NoError(t, err)
			require.NoError(t, refErr)
			assert.Equal(t, tt.wantAddr, l.Address.String())
			assert.Equal(t, path+tt.wantFile, l.File)
			assert.Equal(t, tt.wantLine, l.Line)
			assert.Equal(t, refL, l, "reference")
		})
	}
}

func TestLookupTracksManyAddresses(t *testing.T) {
	// Past 8 tracked addresses the row walk looks addresses up in a map
	// instead of comparing prefixes; both must see the same overrides.
	rows := []string{h22}
	for i := range 12 {
		rows = append(rows, r22(fmt.Sprintf("10.0.1.%d", i), testMAC, 3600, time.Duration(i+1)*time.Minute, 0))
	}
	rows = append(rows, "", r22("10.0.1.11", otherMC, 3600, time.Hour, 0), r22("10.0.1.10", testMAC, 0, 0, 0),
		r22("10.0.1.1", testMAC, 3600, time.Minute, 0), r22("10.0.1.9", testMAC, 3600, time.Minute, 2))
	path := writeSet(t, map[string]string{"": lines(rows...)})
	r := NewReader(path)
	r.chunk = 64 // the later rows arrive after all 12 addresses are known
	l, err := r.Lookup(context.Background(), mustMAC(t, testMAC), testNow)
	require.NoError(t, err)
	assert.Equal(t, ParseLocation{path, 10}, loc(l))
	assert.Equal(t, "10.0.1.8", l.Address.String())
}

func TestLookupLeaseFields(t *testing.T) {
	path := writeSet(t, map[string]string{"": lines(h24,
		"10.0.0.5,58:9c:fc:0a:0b:0c,01:58:9c:fc:0a:0b:0c,3600,1700003600,7,1,0,vm&#x2cone&#x26two,0,{ \"a\": 1 },3")})
	l, err := NewReader(path).Lookup(context.Background(), mustMAC(t, testMAC), testNow)
	require.NoError(t, err)
	assert.Equal(t, Lease{
		Address:       mustAddr("10.0.0.5"),
		HWAddr:        mustMAC(t, testMAC),
		ClientID:      "01:58:9c:fc:0a:0b:0c",
		ValidLifetime: time.Hour,
		Expire:        time.Unix(1700003600, 0),
		SubnetID:      7,
		Hostname:      "vm,one&two",
		State:         StateDefault,
		File:          path,
		Line:          2,
	}, l)
}

func TestLookupErrors(t *testing.T) {
	mine := r22("10.0.0.5", testMAC, 3600, time.Hour, 0)
	tests := []struct {
		name    string
		files   map[string]string
		file    string // suffix of ParseError.File
		line    int
		msg     string
		errText string // whole error text if set; %s is the current path
	}{
		{name: "header lacks hwaddr", files: map[string]string{"": lines(strings.Replace(h22, "hwaddr,", "", 1), mine)},
			line: 1, msg: `header lacks column "hwaddr"`, errText: `kea: %s:1: header lacks column "hwaddr"`},
		{name: "header lacks hostname (older than Kea's minimum)", files: map[string]string{"": lines("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev")},
			line: 1, msg: `header lacks column "hostname"`},
		{name: "header repeats a column", files: map[string]string{"": lines(h22 + ",expire")},
			line: 1, msg: `header has column "expire" twice`},
		{name: "bad header in .2 fails the lookup", files: map[string]string{".2": lines("nonsense"), ".1": lines(h22, mine), "": lines(h22)},
			file: ".2", line: 1, msg: `header lacks column "address"`},
		{name: "MAC row with too few fields", files: map[string]string{"": lines(h22, "10.0.0.5,58:9c:fc:0a:0b:0c,,3600,1700003600")},
			line: 2, msg: "row has 5 fields, header has 11",
			errText: `kea: cannot tell the lease of 58:9c:fc:0a:0b:0c: %s:2: row has 5 fields, header has 11`},
		{name: "MAC row with a bad expire", files: map[string]string{"": lines(h22, mine, "10.0.0.5,58:9c:fc:0a:0b:0c,,3600,abc,1,0,0,,0,")},
			line: 3, msg: `expire "abc" is not a number`},
		{name: "unreadable last row for the MAC's address", files: map[string]string{"": lines(h22, mine, "10.0.0.5,00:11:22:33:44:55,,-1,1700003600,1,0,0,,0,")},
			line: 3, msg: `valid_lifetime "-1" is not a number`},
		{name: "address without hwaddr and client id", files: map[string]string{"": lines(h22, mine, "10.0.0.5,,,3600,1700003600,1,0,0,,0,")},
			line: 3, msg: "row has neither hwaddr nor client_id (allowed only for declined leases)"},
		{name: "earliest of several bad rows", files: map[string]string{".1": lines(h22, "10.0.0.6,58:9c:fc:0a:0b:0c,,1,2,3,4,0,,0,"),
			"": lines(h22, "10.0.0.7,58:9c:fc:0a:0b:0c,,1,2,3,0,0,,x,")}, file: ".1", line: 2, msg: `fqdn_fwd "4" is not 0 or 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeSet(t, tt.files)
			_, err := NewReader(path).Lookup(context.Background(), mustMAC(t, testMAC), testNow)
			var perr *ParseError
			require.ErrorAs(t, err, &perr)
			assert.Equal(t, ParseError{File: path + tt.file, Line: tt.line, Msg: tt.msg}, *perr)
			if tt.errText != "" {
				assert.EqualError(t, err, fmt.Sprintf(tt.errText, path))
			}
		})
	}
}

func TestParseRowMessages(t *testing.T) {
	h, msg := parseHeader([]byte(h24))
	require.Empty(t, msg)
	good := strings.Split("10.0.0.5,58:9c:fc:0a:0b:0c,01:58:9c:fc:0a:0b:0c,3600,1700003600,1,0,0,vm,0,,0", ",")
	with := func(i int, v string) string {
		f := append([]string(nil), good...)
		f[i] = v
		return strings.Join(f, ",")
	}
	tests := []struct{ line, msg string }{
		{strings.Join(good, ","), ""},
		{"10.0.0.5,58:9c:fc:0a:0b:0c", "row has 2 fields, header has 12"},
		{with(0, "10.0.0.256"), `address "10.0.0.256" is not an IPv4 address`},
		{with(0, "010.0.0.5"), `address "010.0.0.5" is not an IPv4 address`},
		{with(0, "2001:db8::1"), `address "2001:db8::1" is not an IPv4 address`},
		{with(1, "58:9c:fc:0a:0b:0g"), `hwaddr "58:9c:fc:0a:0b:0g" is not a hardware address`},
		{with(1, "58::9c"), `hwaddr "58::9c" is not a hardware address`},
		{with(1, strings.Repeat("00:", 20)+"00"), `hwaddr "` + strings.Repeat("00:", 20) + `00" is not a hardware address`},
		{with(2, "01"), `client_id "01" is not a client identifier`},
		{with(2, "0x0102"), ""},
		{with(2, "01 02 03"), ""},
		{with(3, "abc"), `valid_lifetime "abc" is not a number`},
		{with(3, "4294967296"), `valid_lifetime "4294967296" is out of range`},
		{with(4, "abc"), `expire "abc" is not a number`},
		{with(4, "9223372036854775808"), `expire "9223372036854775808" is out of range`},
		{with(5, ""), `subnet_id "" is not a number`},
		{with(6, "true"), `fqdn_fwd "true" is not 0 or 1`},
		{with(7, "2"), `fqdn_rev "2" is not 0 or 1`},
		{with(9, "+1"), `state "+1" is not a number`},
		{with(10, "[1]"), `user_context "[1]" is not a JSON object`},
		{with(10, "{&#x22a&#x22:1}"), ""},
		{with(11, "x"), `pool_id "x" is not a number`},
		// Kea reads these but never writes them; see lfc_oracle_test.go.
		{with(1, "58:9c:fc:a:b:c"), `hwaddr "58:9c:fc:a:b:c" is not a hardware address`},
		{with(1, "58:9C:FC:0A:0B:0C"), ""},
		// Kea's JSON parser rejects what overflows int64/float64, and
		// unpaired surrogates (checked with kea-lfc 2.2).
		{with(10, `{"a":9223372036854775808}`), `user_context "{\"a\":9223372036854775808}" is not a JSON object`},
		{with(10, `{"a":[1e400]}`), `user_context "{\"a\":[1e400]}" is not a JSON object`},
		{with(10, `{"a":"\ud800"}`), `user_context "{\"a\":\"\\ud800\"}" is not a JSON object`},
		{with(10, `{"a":9223372036854775807&#x2c"b":1e308&#x2c"c":"\u00e9"}`), ""},
		{"10.0.0.5,,,3600,1700003600,1,0,0,,1,,0", ""}, // declined without hwaddr is fine
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			_, msg := parseRow(h, []byte(tt.line))
			assert.Equal(t, tt.msg, msg)
		})
	}
}

func TestNoLeaseErrorSaysWhatWasSeen(t *testing.T) {
	path := writeSet(t, map[string]string{".1": lines(h22, r22("10.0.0.5", testMAC, 3600, -time.Minute, 0)),
		"": lines(h22, r22("10.0.0.6", testMAC, 3600, time.Hour, 0), r22("10.0.0.6", otherMC, 3600, time.Hour, 0))})
	_, err := NewReader(path).Lookup(context.Background(), mustMAC(t, testMAC), testNow)
	require.ErrorIs(t, err, ErrNoLease)
	assert.EqualError(t, err, "kea: no current lease for 58:9c:fc:0a:0b:0c in "+path+" (+ .1); rows for this MAC: "+
		"10.0.0.5 expired at 2023-11-14T22:12:20Z ("+path+".1:2); "+
		"10.0.0.6 now belongs to 58:9c:fc:99:88:77 ("+path+":3)")
}

func TestLookupMissingFile(t *testing.T) {
	_, err := NewReader(filepath.Join(t.TempDir(), "kea-leases4.csv")).Lookup(context.Background(), mustMAC(t, testMAC), testNow)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestLookupHonoursContext(t *testing.T) {
	path := writeSet(t, map[string]string{"": lines(h22, r22("10.0.0.5", testMAC, 3600, time.Hour, 0))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := NewReader(path).Lookup(ctx, mustMAC(t, testMAC), testNow)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, ErrNoLease))
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
