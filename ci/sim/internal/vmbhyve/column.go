package vmbhyve

import (
	"strings"
	"unicode/utf8"
)

// columnT formats rows like FreeBSD's `column -ts^` (usr.bin/column
// maketbl): each line is split on the separator with wcstok, so empty fields
// vanish and later fields shift left; every field except a line's last is
// padded to its column's widest entry plus two spaces.
func columnT(lines []string, sep string) string {
	var table [][]string
	var widths []int
	for _, l := range lines {
		var fields []string
		for _, f := range strings.Split(l, sep) {
			if f != "" {
				fields = append(fields, f)
			}
		}
		for i, f := range fields {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			if w := utf8.RuneCountInString(f); w > widths[i] {
				widths[i] = w
			}
		}
		table = append(table, fields)
	}
	var b strings.Builder
	for _, fields := range table {
		for i, f := range fields {
			b.WriteString(f)
			if i < len(fields)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(f)+2))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
