package kea

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// refFile is one lease file's content, for referenceLookup.
type refFile struct {
	name string
	data []byte
}

// referenceLookup is the slow, obviously correct lookup the fast path is
// fuzzed against (fuzz_test.go). It parses every row and folds them into a
// map exactly as LeaseFileLoader::load does (lease_file_loader.h), with the
// files already in Kea's load order. It differs from Kea in one deliberate
// way, the same one the fast path has: see relevance below.
func referenceLookup(files []refFile, mac net.HardwareAddr, now time.Time) (Lease, error) {
	needle := []byte(mac.String())
	type entry struct {
		file, line int
		r          row
		msg        string
	}
	before := func(a, b entry) bool { return a.file < b.file || a.file == b.file && a.line < b.line }

	storage := map[netip.Addr]entry{} // Kea's in-memory lease storage
	lastByAddr := map[string]entry{}  // last row per address field, readable or not
	relevant := map[string]bool{}     // address fields of rows containing the MAC
	var bad []entry
	for fi, f := range files {
		lines := bytes.Split(f.data, []byte{'\n'})
		lines = lines[:len(lines)-1] // after the last '\n': empty, or half-written
		var h *header
		for i, line := range lines {
			if len(line) == 0 {
				continue
			}
			if h == nil {
				var msg string
				if h, msg = parseHeader(line); msg != "" {
					return Lease{}, fmt.Errorf("kea: %w", &ParseError{File: f.name, Line: i + 1, Msg: msg})
				}
				continue
			}
			r, msg := parseRow(h, line)
			r.lease.File, r.lease.Line = f.name, i+1
			e := entry{file: fi, line: i + 1, r: r, msg: msg}
			if msg == "" {
				// Kea skips unreadable rows; for readable ones: insert only
				// with a positive lifetime, delete with 0, else replace.
				_, exists := storage[r.lease.Address]
				switch {
				case !exists && r.valid > 0, exists && r.valid > 0:
					storage[r.lease.Address] = e
				case exists:
					delete(storage, r.lease.Address)
				}
			}
			key, hasKey := h.keyOf(line)
			if hasKey {
				lastByAddr[string(key)] = e
			}
			if containsFold(line, needle) {
				if hasKey {
					relevant[string(key)] = true
				} else {
					bad = append(bad, e)
				}
			}
		}
	}
	// Relevance: Kea would skip an unreadable row, but if that row mentions
	// the MAC, or is the last word on an address whose rows mention it, it
	// may be the very row that grants, moves or ends the lease. Answering
	// without it could return a wrong address, so it is an error instead.
	for k := range relevant {
		if e := lastByAddr[k]; e.msg != "" {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		first := bad[0]
		for _, e := range bad[1:] {
			if before(e, first) {
				first = e
			}
		}
		return Lease{}, fmt.Errorf("kea: cannot tell the lease of %s: %w", mac,
			&ParseError{File: files[first.file].name, Line: first.line, Msg: first.msg})
	}
	var best *entry
	for _, e := range storage {
		l := e.r.lease
		if len(e.r.hwText) != len(needle) || !equalFold([]byte(e.r.hwText), needle) || l.State != StateDefault || !l.Expire.After(now) {
			continue
		}
		if best == nil || l.Expire.After(best.r.lease.Expire) ||
			l.Expire.Equal(best.r.lease.Expire) && before(*best, e) {
			best = &e
		}
	}
	if best == nil {
		return Lease{}, fmt.Errorf("kea: no current lease for %s: %w", mac, ErrNoLease)
	}
	return best.r.lease, nil
}
