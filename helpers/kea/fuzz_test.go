package kea

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var fuzzMACs = []string{"58:9c:fc:0a:0b:0c", "58:9c:fc:01:02:03", "00:00:00:00:00:00"}

// FuzzLookup checks the fast path (search, prefix walk, incremental reads,
// per-inode state across LFC file sets) against referenceLookup's full fold.
// files holds up to four files separated by NUL, the last being the current
// one; siblings picks which of .completed, .2 and .1 the others become.
// The current file is first written cut at split and polled, then written
// whole and polled again, to exercise incremental reads.
func FuzzLookup(f *testing.F) {
	h22 := "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n"
	h24 := strings.TrimSuffix(h22, "\n") + ",pool_id\n"
	mine := "10.0.0.5,58:9c:fc:0a:0b:0c,01:58:9c:fc:0a:0b:0c,3600,1700003600,1,0,0,vm,0,\n"
	other := "10.0.0.5,58:9c:fc:99:99:99,,3600,1700003600,1,0,0,,0,\n"
	del := "10.0.0.5,58:9c:fc:0a:0b:0c,,0,1700000000,1,0,0,,0,\n"
	f.Add(h22+mine, uint8(0), uint16(0), uint16(0), uint8(0))
	f.Add(h22+mine+other, uint8(0), uint16(7), uint16(40), uint8(0))
	f.Add(h22+mine+del+mine, uint8(0), uint16(3), uint16(200), uint8(0))
	f.Add(h24+strings.Replace(mine, ",\n", ",,0\n", 1), uint8(0), uint16(0), uint16(0), uint8(0))
	f.Add(h22+mine+"\x00"+h22+other, uint8(1), uint16(5), uint16(10), uint8(0))
	f.Add(h22+mine+"\x00"+h22+"\x00"+h22+other, uint8(6), uint16(0), uint16(0), uint8(0))
	f.Add(h22+mine+"\x00"+h22+mine+"\x00"+h22+other, uint8(7), uint16(0), uint16(0), uint8(0))
	f.Add(h22+"10.0.0.5,58:9C:FC:0A:0B:0C,,3600,1700003600,1,0,0,,0,\n", uint8(0), uint16(1), uint16(0), uint8(0))
	f.Add(h22+mine+"10.0.0.5,garbage\n", uint8(0), uint16(0), uint16(0), uint8(0))
	f.Add(h22+"10.0.0.6,00:11:22:33:44:55,01:58:9c:fc:0a:0b:0c,3600,1700003600,1,0,0,,0,\n", uint8(0), uint16(0), uint16(0), uint8(0))
	f.Add("hwaddr,address,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname\n58:9c:fc:0a:0b:0c,10.0.0.7,,60,1700000060,1,0,0,\n", uint8(0), uint16(2), uint16(0), uint8(0))
	f.Add(h22+mine+"10.0.0.5,58:9c:fc:0a:0b:0c,,3600,1700003600,1,0,0,vm,0,,\n", uint8(0), uint16(0), uint16(0), uint8(1))

	f.Fuzz(func(t *testing.T, files string, siblings uint8, chunk uint16, split uint16, macIdx uint8) {
		parts := strings.Split(files, "\x00")
		if len(parts) > 4 {
			parts[3] = strings.Join(parts[3:], "\x00") // NULs stay in the current file
			parts = parts[:4]
		}
		checkAgainstReference(t, parts, siblings, chunk, split, fuzzMACs[int(macIdx)%len(fuzzMACs)])
	})
}

// FuzzLookupRows is FuzzLookup with files built from rows that mean
// something: each 3 bytes of program pick an address, hwaddr, client id,
// lifetime, expire and state from small sets around the looked-up MAC, or
// start the next file, or write a blank or broken line. Random bytes rarely
// make such rows, and these are where the fold rules live.
func FuzzLookupRows(f *testing.F) {
	f.Add([]byte{0x00, 0x09, 0x00}, uint8(0), uint16(0), uint16(0))
	f.Add([]byte{0x00, 0x09, 0x00, 0x04, 0x09, 0x00}, uint8(0), uint16(5), uint16(30))
	f.Add([]byte{0x00, 0x09, 0x00, 0x00, 0x40, 0x00, 0x00, 0x08, 0x00}, uint8(1), uint16(9), uint16(100))
	f.Add([]byte{0x00, 0x09, 0x01, 0x00, 0x40, 0x02, 0x01, 0x0d, 0x03, 0x00, 0xc0, 0x00}, uint8(7), uint16(3), uint16(60))
	f.Fuzz(func(t *testing.T, program []byte, siblings uint8, chunk uint16, split uint16) {
		const mac = "58:9c:fc:0a:0b:0c"
		hws := []string{mac, strings.ToUpper(mac), "58:9c:fc:99:88:77", "", "58:9c:fc:0a:0b", "58:9c:fc:0a:0b:0c:0d", "zz", "58:9c:fc:0a:0b:c"}
		cids := []string{"", "01:" + mac, "ff:01", "01", "01:58:9c:fc:99:88:77", mac, "0x01" + strings.ReplaceAll(mac, ":", ""), "x"}
		valids := []string{"0", "3600", "60", "x"}
		expires := []string{"1699999990", "1700000000", "1700000100", "abc"}
		headers := []string{
			"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context",
			"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id",
			"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname",
			"state,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,address",
		}
		var parts []string
		var cur strings.Builder
		var names []string
		newFile := func(h byte) {
			if len(names) > 0 {
				parts = append(parts, cur.String())
				cur.Reset()
			}
			names = append(names, headers[h%4])
			cur.WriteString(headers[h%4] + "\n")
		}
		newFile(0)
		for len(program) >= 3 {
			b0, b1, b2 := program[0], program[1], program[2]
			program = program[3:]
			switch b1 >> 6 {
			case 1:
				if len(names) < 4 {
					newFile(b2)
				}
				continue
			case 2:
				cur.WriteString("\n")
				continue
			}
			// Mostly four addresses, so rows collide; up to 32 so that
			// more than 8 addresses get tracked (match's map path).
			addr := fmt.Sprintf("10.0.0.%d", int(b0&3)+4*int(b2>>5))
			v := map[string]string{
				"address": addr, "hwaddr": hws[b0>>2&7], "client_id": cids[b0>>5],
				"valid_lifetime": valids[b1&3], "expire": expires[b1>>2&3], "subnet_id": "1",
				"fqdn_fwd": "0", "fqdn_rev": "0", "hostname": "", "state": fmt.Sprint(b1 >> 4 & 3),
				"user_context": "", "pool_id": "0",
			}
			cols := strings.Split(names[len(names)-1], ",")
			fields := make([]string, len(cols))
			for i, c := range cols {
				fields[i] = v[c]
			}
			if b1>>6 == 3 { // a broken row: drop fields from the end
				fields = fields[:int(b2)%len(fields)]
			}
			cur.WriteString(strings.Join(fields, ",") + "\n")
		}
		parts = append(parts, cur.String())
		checkAgainstReference(t, parts, siblings, chunk, split, mac)
	})
}

// checkAgainstReference writes parts as lease files (the last is the
// current file; siblings picks which of .completed, .2 and .1 the others
// become), and checks that a Watch polled before and after the current file
// is completed, and a fresh Lookup, agree with referenceLookup.
func checkAgainstReference(t *testing.T, parts []string, siblings uint8, chunk, split uint16, macText string) {
	mac, err := net.ParseMAC(macText)
	require.NoError(t, err)
	now := time.Unix(1700000000, 0)
	path := filepath.Join(t.TempDir(), "kea-leases4.csv")

	var names []string
	for i, suffix := range []string{".completed", ".2", ".1"} {
		if siblings&(1<<i) != 0 && len(names) < len(parts)-1 {
			names = append(names, path+suffix)
		}
	}
	content := map[string]string{}
	for i, name := range names {
		content[name] = parts[i]
		require.NoError(t, os.WriteFile(name, []byte(parts[i]), 0o644))
	}
	cur := parts[len(parts)-1]
	content[path] = cur

	var ref []refFile
	if c, ok := content[path+".completed"]; ok {
		ref = append(ref, refFile{path + ".completed", []byte(c)})
	} else {
		for _, suffix := range []string{".2", ".1"} {
			if c, ok := content[path+suffix]; ok {
				ref = append(ref, refFile{path + suffix, []byte(c)})
			}
		}
	}
	ref = append(ref, refFile{path, []byte(cur)})
	wantL, wantErr := referenceLookup(ref, mac, now)

	r := NewReader(path)
	if chunk != 0 {
		r.chunk = 1 + int(chunk)%300
	}
	cut := int(split) % (len(cur) + 1)
	require.NoError(t, os.WriteFile(path, []byte(cur[:cut]), 0o644))
	w := r.Watch(mac)
	defer w.Close()
	_, _ = w.Poll(context.Background(), now)
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fh.WriteString(cur[cut:])
	require.NoError(t, err)
	require.NoError(t, fh.Close())

	gotL, gotErr := w.Poll(context.Background(), now)
	sameResult(t, "watch", wantL, wantErr, gotL, gotErr)
	gotL, gotErr = r.Lookup(context.Background(), mac, now)
	sameResult(t, "lookup", wantL, wantErr, gotL, gotErr)
}

func sameResult(t *testing.T, what string, wantL Lease, wantErr error, gotL Lease, gotErr error) {
	t.Helper()
	var wantP, gotP *ParseError
	switch {
	case wantErr == nil:
		require.NoError(t, gotErr, what)
		require.Equal(t, wantL, gotL, what)
	case errors.As(wantErr, &wantP):
		require.ErrorAs(t, gotErr, &gotP, "%s: want %v", what, wantErr)
		require.Equal(t, *wantP, *gotP, what)
	default:
		require.ErrorIs(t, wantErr, ErrNoLease)
		require.ErrorIs(t, gotErr, ErrNoLease, what)
	}
}

// FuzzParseRow checks that no header or row makes the parser panic, and
// that the row's address field is found consistently with parseRow.
func FuzzParseRow(f *testing.F) {
	f.Add("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context",
		"10.0.0.5,58:9c:fc:0a:0b:0c,01:58:9c:fc:0a:0b:0c,3600,1700003600,1,0,0,vm&#x2c;1,0,{\"a\":1}")
	f.Add("hostname,fqdn_rev,fqdn_fwd,subnet_id,expire,valid_lifetime,client_id,hwaddr,address,extra",
		"&#x,1,0,4294967295,9223372036854775807,4294967295,0x0102,a:b:c,10.0.0.5,whatever")
	f.Add("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,pool_id",
		"1.2.3.4,,01 02 03,1,2,3,1,1,,99999999999")
	f.Fuzz(func(t *testing.T, hdr, line string) {
		h, msg := parseHeader([]byte(hdr))
		if msg != "" {
			require.Nil(t, h)
			return
		}
		r, msg := parseRow(h, []byte(line))
		if msg == "" {
			key, ok := h.keyOf([]byte(line))
			require.True(t, ok)
			require.Equal(t, r.lease.Address.String(), string(key))
		}
	})
}

// FuzzFinder checks the MAC search in both of its modes against a naive
// case-insensitive search.
func FuzzFinder(f *testing.F) {
	f.Add([]byte("58:9c:fc:0a:0b:0c"), []byte("xx58:9C:fc:0a:0b:0cyy"), []byte("5555::::"))
	f.Add([]byte("ab"), []byte("aAbBaB"), []byte("aaaaaaaabbbbb"))
	f.Add([]byte("58:9c:fc:01:02:03"), []byte(strings.Repeat("10.0.0.5,58:9c:fc:01:02:04,", 5)+"58:9C:fc:01:02:03"), []byte("58:9c:fc:01:02:0358:9c:fc:01:02:03"))
	f.Fuzz(func(t *testing.T, needle, hay, sample []byte) {
		needle = bytes.ToLower(needle)
		if len(needle) == 0 {
			return
		}
		fd := newFinder(needle, sample)
		want := -1
		for i := 0; i+len(needle) <= len(hay); i++ {
			if equalFold(hay[i:i+len(needle)], needle) {
				want = i
				break
			}
		}
		require.Equal(t, want, fd.index(hay), "pair=%v", fd.pair)
	})
}
