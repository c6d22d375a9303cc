package sim_test

import (
	"context"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// vm runs the fake vm and fails the test if it could not run at all.
func vm(t *testing.T, ctx context.Context, h *sim.Host, args ...string) sim.Result {
	t.Helper()
	r, err := h.VM(ctx, args...)
	if err != nil {
		t.Fatalf("vm %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustVM runs the fake vm and requires exit status 0.
func mustVM(t *testing.T, ctx context.Context, h *sim.Host, args ...string) sim.Result {
	t.Helper()
	r := vm(t, ctx, h, args...)
	if r.ExitCode != 0 {
		t.Fatalf("vm %s: %s", strings.Join(args, " "), r)
	}
	return r
}

var stateRe = regexp.MustCompile(`(?m)^(\S+)\s.*\s(Running \(\d+\)|Bootloader \(\d+\)|Stopped|Locked \([^)]*\)|Suspended)(\s+\S+)?$`)

// states parses `vm list` into NAME -> STATE.
func states(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n")[1:] {
		if s := stateRe.FindStringSubmatch(l); s != nil {
			m[s[1]] = s[2]
		}
	}
	return m
}

// waitState polls `vm list` until NAME's state starts with prefix.
func waitState(t *testing.T, ctx context.Context, h *sim.Host, name, prefix string) {
	t.Helper()
	last := ""
	for {
		r := vm(t, ctx, h, "list")
		last = states(r.Stdout)[name]
		if strings.HasPrefix(last, prefix) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became %q (last %q)\n%s\nconsole:\n%s", name, prefix, last, r.Stdout, readFile(h.GuestLog(name)))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
