package kea

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// finder searches for the MAC text ignoring ASCII case. Kea writes hwaddr in
// lowercase (HWAddr::toText, src/lib/dhcp/hwaddr.cc), but a case-sensitive
// search would silently miss a hand-edited row, so every candidate is
// checked with equalFold and the search itself must not depend on case.
//
// Which search is fast depends on the data: bytes.IndexByte runs at memory
// speed, but a MAC in a bhyve lease file shares its 58:9c:fc prefix and its
// digits with every row, so the needle's first byte is everywhere and
// bytes.Index degrades to a brute-force compare (about 2 GB/s here, slower
// than grep). The finder therefore samples the data and anchors on the
// needle's rarest byte (both cases for a letter); if even that byte is
// common it checks the two rarest bytes eight positions at a time
// (SWAR), which costs the same whatever the data.
type finder struct {
	needle []byte // lowercase
	pair   bool

	// anchor mode
	anchor int
	lo, up byte

	// pair mode
	p1, p2 int
	m1, m2 uint64
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
	fold  = 0x2020202020202020
)

// anchorMaxRate is the largest share of sampled bytes equal to the anchor
// byte for which repeated IndexByte calls still beat the SWAR pair scan
// (measured with BenchmarkFinder: a call per candidate costs about as much as
// scanning 40 bytes the SWAR way).
const anchorMaxRate = 1.0 / 40

func newFinder(needle, sample []byte) *finder {
	f := &finder{needle: needle}
	var freq [256]int
	for _, c := range sample {
		freq[lower(c)]++
	}
	best, second := -1, -1
	for i, c := range needle {
		switch {
		case best < 0 || freq[c] < freq[needle[best]]:
			best, second = i, best
		case second < 0 || freq[c] < freq[needle[second]]:
			second = i
		}
	}
	if len(needle) < 2 || len(sample) == 0 || float64(freq[needle[best]]) <= anchorMaxRate*float64(len(sample)) {
		f.anchor = best
		f.lo = needle[best]
		f.up = upper(f.lo)
		return f
	}
	f.pair = true
	f.p1, f.p2 = min(best, second), max(best, second)
	// OR-ing 0x20 folds A-Z onto a-z and leaves digits and ':' alone; other
	// bytes it folds together only make extra candidates for equalFold.
	f.m1 = uint64(needle[f.p1]|0x20) * ones
	f.m2 = uint64(needle[f.p2]|0x20) * ones
	return f
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// index returns the offset of the first case-insensitive match in s, or -1.
func (f *finder) index(s []byte) int {
	if len(s) < len(f.needle) || len(f.needle) == 0 {
		if len(f.needle) == 0 {
			return 0
		}
		return -1
	}
	if f.pair {
		return f.indexPair(s)
	}
	return f.indexAnchor(s)
}

func (f *finder) indexAnchor(s []byte) int {
	n, a := len(f.needle), f.anchor
	// Anchor bytes can only sit at a..len(s)-n+a.
	lim := s[:len(s)-n+a+1]
	nextLo, nextUp := -1, -1 // next anchor position of each case; -1 = unknown
	if f.up == f.lo {
		nextUp = len(lim) // never
	}
	for pos := a; pos < len(lim); {
		if nextLo < pos {
			nextLo = indexFrom(lim, pos, f.lo)
		}
		if nextUp < pos {
			nextUp = indexFrom(lim, pos, f.up)
		}
		c := min(nextLo, nextUp)
		if c >= len(lim) {
			return -1
		}
		if equalFold(s[c-a:c-a+n], f.needle) {
			return c - a
		}
		pos = c + 1
	}
	return -1
}

// indexFrom is IndexByte from pos, returning len(s) when absent.
func indexFrom(s []byte, pos int, c byte) int {
	i := bytes.IndexByte(s[pos:], c)
	if i < 0 {
		return len(s)
	}
	return pos + i
}

func (f *finder) indexPair(s []byte) int {
	n := len(f.needle)
	last := len(s) - n // last possible match start
	// a[i] and b[i] are the bytes at the two checked needle positions for a
	// match starting at i. Sixteen starts per round, as two independent
	// words, keeps the CPU busy between the loads.
	a, b := s[f.p1:f.p1+last+1], s[f.p2:f.p2+last+1]
	i := 0
	for ; i+15 <= last; i += 16 {
		aa, bb := a[i:i+16:i+16], b[i:i+16:i+16]
		v1 := (binary.LittleEndian.Uint64(aa[:8]) | fold ^ f.m1) | (binary.LittleEndian.Uint64(bb[:8]) | fold ^ f.m2)
		v2 := (binary.LittleEndian.Uint64(aa[8:]) | fold ^ f.m1) | (binary.LittleEndian.Uint64(bb[8:]) | fold ^ f.m2)
		// Flags every zero byte of v (and sometimes a byte above one, which
		// equalFold then rejects); never misses one.
		z1 := (v1 - ones) &^ v1 & highs
		z2 := (v2 - ones) &^ v2 & highs
		if z1|z2 == 0 {
			continue
		}
		for k, z := range [2]uint64{z1, z2} {
			for ; z != 0; z &= z - 1 {
				j := i + 8*k + bits.TrailingZeros64(z)>>3
				if equalFold(s[j:j+n], f.needle) {
					return j
				}
			}
		}
	}
	for ; i <= last; i++ {
		if equalFold(s[i:i+n], f.needle) {
			return i
		}
	}
	return -1
}
