package hostmem

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// script writes an executable sh script standing in for sysctl(8), printing
// what FreeBSD's prints with -n: each value on its own line.
func script(t *testing.T, body string) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sysctl")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{p}
}

func TestCommandFree(t *testing.T) {
	tests := []struct {
		name, body string
		want       uint64
		wantErr    string
	}{
		{"free plus inactive times page size",
			`[ "$1" = -n ] || exit 9; [ "$2 $3 $4" = "vm.stats.vm.v_free_count vm.stats.vm.v_inactive_count hw.pagesize" ] || exit 8; printf '1000\n24\n4096\n'`,
			1024 * 4096, ""},
		{"unknown oid", `echo "sysctl: unknown oid 'vm.stats.vm.v_free_count'" >&2; exit 1`, 0, "unknown oid"},
		{"too few lines", `printf '1\n2\n'`, 0, "printed 2 line(s) for 3"},
		{"not a number", `printf '1\nx\n4096\n'`, 0, `"x" is not a number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := Command{Argv: script(t, tc.body), Run: vmbhyve.ExecCommander{}}
			got, err := Free(context.Background(), src)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Free = %d, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Free = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestReadHost(t *testing.T) {
	src := Command{Argv: script(t, `printf '17179869184\n8\n100\n50\n4096\n'`), Run: vmbhyve.ExecCommander{}}
	h, err := ReadHost(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Host{PhysMem: 16 << 30, NCPU: 8, Free: 150 * 4096}); h != want {
		t.Fatalf("ReadHost = %+v, want %+v", h, want)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr string
	}{
		{"2G", 2 * GiB, ""},
		{"2g", 2 * GiB, ""},
		{"2048M", 2 * GiB, ""},
		{"1536m", 1536 * MiB, ""},
		{"2048", 0, "expected a whole number with the unit M or G"},
		{"0G", 0, "is zero"},
		{"2GB", 0, "not a memory size"},
		{"1.5G", 0, "not a memory size"},
		{" 2G", 0, "not a memory size"},
		{"-1G", 0, "not a memory size"},
		{"2T", 0, "not a memory size"},
		{"99999999G", 0, "not a memory size"},
		{"", 0, "not a memory size"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSize(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseConfMemory(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"1024M", GiB, true}, {"512", 512 * MiB, true}, {"2G", 2 * GiB, true},
		{"1t", TiB, true}, {"524288K", 512 * MiB, true}, {"0", 0, false}, {"lots", 0, false}, {"", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseConfMemory(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseConfMemory(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	for s, want := range map[Size]string{2 * GiB: "2G", 1536 * MiB: "1536M", TiB: "1T", 3 * KiB: "3K", 0: "0", 100: "100"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint64(s), got, want)
		}
	}
	if got := (GiB + GiB/5).Human(); got != "1.2G" {
		t.Errorf("Human = %q, want 1.2G", got)
	}
}
