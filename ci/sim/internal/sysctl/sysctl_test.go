package sysctl

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestSysctl(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sysctl.json")
	v := Defaults()
	v["vm.stats.vm.v_free_count"] = 1000
	if err := Store(path, v); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		args           []string
		stdout, stderr string
		code           int
	}{
		{"values alone in argument order", []string{"-n", "vm.stats.vm.v_free_count", "hw.pagesize"}, "1000\n4096\n", "", 0},
		{"names and values", []string{"hw.ncpu"}, "hw.ncpu: 8\n", "", 0},
		{"unknown oid warned, the rest printed", []string{"-n", "hw.nope", "hw.ncpu"}, "8\n", "sysctl: unknown oid 'hw.nope'\n", 1},
		{"read only", []string{"hw.ncpu=4"}, "", "sysctl: oid 'hw.ncpu' is read only\n", 1},
		{"no name", []string{"-n"}, "", usage, 1},
		{"bad flag", []string{"-z", "hw.ncpu"}, "", "sysctl: illegal option -- z\n" + usage, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(path, tc.args, &out, &errOut)
			if code != tc.code || out.String() != tc.stdout || errOut.String() != tc.stderr {
				t.Fatalf("sysctl %q = %d, %q, %q; want %d, %q, %q", tc.args, code, out.String(), errOut.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
