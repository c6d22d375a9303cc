package main_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

func binary(t *testing.T) string {
	t.Helper()
	b, err := sim.Binary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var exportRe = regexp.MustCompile(`^export ([A-Z_]+)='((?:[^']|'\\'')*)'$`)

// parseExports reads `bhyve-sim up` output as a shell's eval would.
func parseExports(t *testing.T, out string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		m := exportRe.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("not an export line: %q", l)
		}
		env[m[1]] = strings.ReplaceAll(m[2], `'\''`, "'")
	}
	return env
}

func run(t *testing.T, ctx context.Context, env []string, name string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func TestUpDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin := binary(t)
	root := filepath.Join(t.TempDir(), "sim root")
	base := append(os.Environ(), "BHYVE_SIM_ROOT="+root)
	t.Cleanup(func() { _, _, _ = run(t, context.Background(), base, bin, "down") })

	out, stderr, err := run(t, ctx, base, bin, "up")
	if err != nil {
		t.Fatalf("up: %v\n%s", err, stderr)
	}
	exports := parseExports(t, out)
	for _, k := range []string{"PATH", "BHYVE_SIM_LEASES", "BHYVE_SIM_SSH_KEY", "BHYVE_SIM_KNOWN_HOSTS",
		"BHYVE_SIM_NETNS", "BHYVE_SIM_ROOT", "BHYVE_SIM_USER"} {
		if exports[k] == "" {
			t.Errorf("up did not export %s:\n%s", k, out)
		}
	}
	if exports["BHYVE_SIM_ROOT"] != root {
		t.Errorf("BHYVE_SIM_ROOT = %q", exports["BHYVE_SIM_ROOT"])
	}
	if !strings.HasPrefix(exports["PATH"], filepath.Join(root, "bin")+":") {
		t.Errorf("PATH does not start with the fake vm: %s", exports["PATH"])
	}
	if !strings.Contains(stderr, "is up") {
		t.Errorf("diagnostics belong on stderr: %q", stderr)
	}
	env := []string{"PATH=" + exports["PATH"]}

	// The fake vm found through PATH by a shell that evaluated the exports.
	list, _, err := run(t, ctx, env, "/bin/sh", "-c", "vm list")
	if err != nil || !regexp.MustCompile(`(?m)^tmpl +default +bhyveload .* Stopped$`).MatchString(list) {
		t.Fatalf("vm list: %v\n%s", err, list)
	}
	// up is idempotent: a second one reprints the exports.
	out2, _, err := run(t, ctx, base, bin, "up")
	if err != nil || parseExports(t, out2)["BHYVE_SIM_NETNS"] != exports["BHYVE_SIM_NETNS"] {
		t.Errorf("second up: %v\n%s", err, out2)
	}

	if _, stderr, err := run(t, ctx, base, bin, "fault", "tmpl", "boot_delay=1s", "run_lock=empty", "--clear", "no_sshd=true"); err != nil {
		t.Errorf("fault: %v %s", err, stderr)
	}
	fj, _, _ := run(t, ctx, base, bin, "fault", "tmpl")
	if !strings.Contains(fj, `"no_sshd": true`) || strings.Contains(fj, "boot_delay") {
		t.Errorf("fault knobs after --clear: %s", fj)
	}

	// A guest, so down has processes and links to remove.
	if _, e, err := run(t, ctx, env, "/bin/sh", "-c", "vm clone tmpl@base cli-1"); err != nil {
		t.Fatalf("clone: %v %s", err, e)
	}
	if _, e, err := run(t, ctx, env, "/bin/sh", "-c", "vm start cli-1"); err != nil {
		t.Fatalf("start: %v %s", err, e)
	}
	for {
		l, _, _ := run(t, ctx, env, "/bin/sh", "-c", "vm list")
		if strings.Contains(l, "Running (") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("guest never ran:\n%s", l)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _, err := run(t, ctx, base, bin, "status")
	if err != nil || !strings.Contains(st, ": up") || !strings.Contains(st, "cli-1") {
		t.Errorf("status: %v\n%s", err, st)
	}

	if _, stderr, err := run(t, ctx, base, bin, "down"); err != nil {
		t.Fatalf("down: %v %s", err, stderr)
	}
	if _, stderr, err := run(t, ctx, base, bin, "down"); err != nil {
		t.Errorf("second down: %v %s", err, stderr)
	}
	if _, err := os.Stat(root); err == nil {
		t.Errorf("down left %s", root)
	}
	res, _, _ := run(t, ctx, base, bin, "resources")
	if res != "" {
		t.Errorf("down left resources:\n%s", res)
	}
}

// TestDownWithoutState: after a crash lost sim.json, down still finds the
// namespace and processes by the id derived from the root.
func TestDownWithoutState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin := binary(t)
	root := t.TempDir()
	base := append(os.Environ(), "BHYVE_SIM_ROOT="+root)
	t.Cleanup(func() { _, _, _ = run(t, context.Background(), base, bin, "down") })
	if _, stderr, err := run(t, ctx, base, bin, "up"); err != nil {
		t.Fatalf("up: %v\n%s", err, stderr)
	}
	if err := os.Remove(filepath.Join(root, "sim.json")); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(t, ctx, base, bin, "down"); err != nil {
		t.Fatalf("down: %v %s", err, stderr)
	}
	if res, _, _ := run(t, ctx, base, bin, "resources"); res != "" {
		t.Errorf("left behind:\n%s", res)
	}
}
