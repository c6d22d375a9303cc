//go:build kealfc

// This test needs Kea's kea-lfc on PATH (Debian: kea-dhcp4-server), so it
// only builds with -tags kealfc:
//
//	GOWORK=off go test -tags kealfc -run TestParseRowAgainstKeaLFC ./helpers/kea
//
// kea-lfc loads a lease file with Kea's own parser and writes what it kept,
// which makes it an oracle for parseRow.

package kea

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseRowAgainstKeaLFC feeds kea-lfc rows that differ from a good row
// in one field and checks that parseRow never keeps a row Kea drops (that
// could make a wrong answer), and reads rows both keep the same way. Rows
// Kea keeps and parseRow drops are allowed: they become errors only.
func TestParseRowAgainstKeaLFC(t *testing.T) {
	lfc, err := exec.LookPath("kea-lfc")
	require.NoError(t, err, "install kea-lfc or drop -tags kealfc")
	conf := filepath.Join(t.TempDir(), "kea-dhcp4.conf")
	require.NoError(t, os.WriteFile(conf, []byte(`{"Dhcp4": {}}`), 0o644))

	good := strings.Split("10.0.0.1,58:9c:fc:0a:0b:0c,01:58:9c:fc:0a:0b:0c,3600,1700000100,1,0,0,h,0,", ",")
	variants := map[int][]string{
		0: {"10.0.0.256", "010.0.0.1", "10.0.0", "::1", "::ffff:10.0.0.1", " 10.0.0.1", "0.0.0.0"},
		1: {"58:9C:FC:0A:0B:0C", "58:9c:fc:a:b:c", "589cfc0a0b0c", "58-9c-fc-0a-0b-0c", "58:9c:fc:0a:0b", "58::9c", ":58", "zz", strings.Repeat("00:", 20) + "00", "58:9c:fc:0a:0b:0c ", "58 9c"},
		2: {"", "01", "ff:01", "0x0102", "0x01", "1:2", "01 02 03", "x", "0102", "102", strings.Repeat("01:", 128) + "01", "01:02:"},
		3: {"0", "-1", "+5", "4294967295", "4294967296", "", " 5", "5 ", "0x10", "05", "1e3"},
		4: {"-5", "+1700000100", "18446744073709551615", "18446744073709551616", "", "abc", " 1700000100", "1700000100.5"},
		5: {"0", "4294967295", "4294967296", "-1", "", "x"},
		6: {"1", "2", "true", "", "-0", "+1", " 1", "01"},
		9: {"1", "2", "3", "4294967295", "4294967296", "-1", "", "x", "+0"},
		10: {"{}", `{"a":1}`, "[1]", "x", "{&#x22a&#x22:1}", "null", " {}", "{} ", "{'a':1}", `{"a":1}{}`, `"s"`, `{"a":1e400}`, "{/*c*/}", `{"a": 01}`,
			`{"a":99999999999999999999}`, `{"a":9223372036854775807}`, `{"a":9223372036854775808}`, `{"a":-9223372036854775809}`,
			`{"a":1e308}`, `{"a":1.5}`, `{"a":[1e999]}`, `{"a":"\u00e9"}`, `{"a":"\ud800"}`, `{"a":true}`},
	}
	h, msg := parseHeader([]byte(h22))
	require.Empty(t, msg)
	for col, vs := range variants {
		for _, v := range vs {
			f := append([]string(nil), good...)
			f[col] = v
			line := strings.Join(f, ",")
			t.Run(line, func(t *testing.T) {
				dir := t.TempDir()
				in, prev := filepath.Join(dir, "in.csv"), filepath.Join(dir, "prev.csv")
				require.NoError(t, os.WriteFile(in, []byte(h22+"\n"+line+"\n"), 0o644))
				require.NoError(t, os.WriteFile(prev, []byte(h22+"\n"), 0o644))
				out, err := exec.Command(lfc, "-4", "-x", prev, "-i", in, "-o", filepath.Join(dir, "out"),
					"-f", filepath.Join(dir, "finish"), "-p", filepath.Join(dir, "pid"), "-c", conf).CombinedOutput()
				require.NoError(t, err, "%s", out)
				// kea-lfc renames its result over the previous file.
				res, err := os.ReadFile(prev)
				require.NoError(t, err)
				kept := strings.Split(strings.TrimSpace(string(res)), "\n")[1:]

				r, msg := parseRow(h, []byte(line))
				if len(kept) == 0 {
					if f[3] == "0" {
						return // read fine, lifetime 0 stores nothing
					}
					assert.NotEmpty(t, msg, "Kea drops this row; parseRow must not keep it")
					return
				}
				if msg != "" {
					t.Logf("stricter than Kea: %s", msg)
					return
				}
				k := strings.Split(kept[0], ",")
				assert.Equal(t, k[0], r.lease.Address.String())
				assert.Equal(t, k[1], strings.ToLower(r.hwText))
				assert.Equal(t, k[3], fmtUint(uint64(r.valid)))
				assert.Equal(t, k[4], fmtUint(uint64(r.lease.Expire.Unix())))
				assert.Equal(t, k[9], fmtUint(uint64(r.lease.State)))
			})
		}
	}
}

func fmtUint(v uint64) string { return strconv.FormatUint(v, 10) }
