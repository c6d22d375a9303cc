package sim_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

var pidRe = regexp.MustCompile(`\((\d+)\)`)

// TestListGolden puts guests in every state vm-bhyve's list can show and
// compares the BSD column output with golden files, per version mode.
func TestListGolden(t *testing.T) {
	for _, mode := range []string{sim.Version16, sim.Version17, sim.Version18} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 90*time.Second)
			h := sim.New(t, sim.Options{VersionMode: mode})
			base := h.Template() + "@" + h.Snapshot()

			// Auto-started template: AUTO shows "Yes [1]".
			if r, err := h.Sysrc(ctx, "-f", filepath.Join(h.Root(), "etc", "rc.conf"), "vm_list=tmpl"); err != nil || r.ExitCode != 0 {
				t.Fatalf("sysrc vm_list: %v %s", err, r)
			}
			for _, n := range []string{"run-1", "boot-1", "lock-1", "nocpu-1", "a-rather-long-guest-name", "susp-1"} {
				mustVM(t, ctx, h, "clone", base, n)
			}
			// Running and Bootloader come from real guests.
			mustVM(t, ctx, h, "start", "run-1")
			if err := h.SetFault("boot-1", sim.Fault{LoaderDelay: 10 * time.Minute}); err != nil {
				t.Fatal(err)
			}
			mustVM(t, ctx, h, "start", "boot-1")
			// Locked by another host, and a guest whose conf lacks cpu and
			// memory: the empty fields collapse and shift later columns.
			if err := h.SetFault("lock-1", sim.Fault{RunLock: "otherhost"}); err != nil {
				t.Fatal(err)
			}
			if r, err := h.Sysrc(ctx, "-f", h.ConfPath("nocpu-1"), "-x", "cpu", "memory"); err != nil || r.ExitCode != 0 {
				t.Fatalf("sysrc -x: %v %s", err, r)
			}
			// A saved state: "Suspended" from 1.7 on, "Stopped" before.
			if err := os.WriteFile(filepath.Join(h.VMDir(), "susp-1", "susp-1.save"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if r, err := h.Sysrc(ctx, "-f", h.ConfPath("a-rather-long-guest-name"), "tags=ci linux"); err != nil || r.ExitCode != 0 {
				t.Fatalf("sysrc tags: %v %s", err, r)
			}
			waitState(t, ctx, h, "run-1", "Running")
			waitState(t, ctx, h, "boot-1", "Bootloader")

			for _, args := range [][]string{{"list"}, {"list", "-r"}} {
				r := mustVM(t, ctx, h, args...)
				if r.Stderr != "" {
					t.Errorf("vm %v wrote to stderr: %q", args, r.Stderr)
				}
				got := r.Stdout
				name := "list-" + mode + ".golden"
				if len(args) > 1 {
					name = "list-r-" + mode + ".golden"
				}
				golden := filepath.Join("testdata", name)
				if *update {
					if err := os.WriteFile(golden, []byte(pidRe.ReplaceAllString(got, "(PID)")), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("golden file (run with -update to create): %v", err)
				}
				if err := matchGolden(got, string(want)); err != nil {
					t.Errorf("vm %v differs from %s: %v\ngot:\n%s\nwant:\n%s", args, golden, err, got, want)
				}
			}
		})
	}
}

// matchGolden compares list output with a golden file in which every pid is
// "(PID)". A pid's digits widen its column when STATE is not the last one
// (1.8's TAGS), so the text is matched exactly except for that padding, and
// the alignment is checked separately: every line but the header must be
// padded as BSD column would pad it given its real widths.
func matchGolden(got, want string) error {
	pattern := regexp.QuoteMeta(want)
	pattern = strings.ReplaceAll(pattern, `\(PID\)`, `\(\d+\) *`)
	pattern = regexp.MustCompile(`(\\d\+\) \*) +`).ReplaceAllString(pattern, "$1")
	if !regexp.MustCompile(`\A` + pattern + `\z`).MatchString(got) {
		return errors.New("text differs")
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		rows = append(rows, splitColumns(l))
	}
	var lines []string
	for _, r := range rows {
		lines = append(lines, strings.Join(r, "^"))
	}
	if again := columnT(lines); again != got {
		return fmt.Errorf("padding is not BSD column -t's:\n%s", again)
	}
	return nil
}

// splitColumns splits a list line at runs of two or more spaces (single
// spaces occur inside "Yes [1]" and "Running (123)").
func splitColumns(l string) []string {
	return regexp.MustCompile(`  +`).Split(l, -1)
}

// columnT is an independent re-implementation of the padding rule: widest
// field per column plus two spaces, nothing after a line's last field.
func columnT(lines []string) string {
	var w []int
	for _, l := range lines {
		for i, f := range strings.Split(l, "^") {
			if i >= len(w) {
				w = append(w, 0)
			}
			if len(f) > w[i] {
				w[i] = len(f)
			}
		}
	}
	var b strings.Builder
	for _, l := range lines {
		fs := strings.Split(l, "^")
		for i, f := range fs {
			b.WriteString(f)
			if i < len(fs)-1 {
				b.WriteString(strings.Repeat(" ", w[i]-len(f)+2))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
