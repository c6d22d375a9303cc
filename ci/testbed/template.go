package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// Operator is bhyve-executor run by the host's operator: inside the host,
// with the testbed's bhyve.toml and runner section. Its combined output and
// exit error are returned, and both are logged with the command line and
// how long it took, so that a test's log shows what an operator would see.
func (tb *Testbed) Operator(ctx context.Context, t testing.TB, runner string, args ...string) (string, error) {
	t.Helper()
	argv := append([]string{"--config", tb.SettingsPath, "--runner", runner}, args...)
	cmd := tb.Host.Command(ctx, tb.ExecutorBin, argv...)
	cmd.Dir = tb.Dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	t.Logf("$ bhyve-executor %s   # exit %d after %s\n%s", strings.Join(argv, " "), code, time.Since(start).Round(time.Millisecond), out)
	return string(out), err
}

// CloudImage writes the simulator's stand-in for FreeBSD's BASIC-CLOUDINIT
// image into the testbed's directory and returns its path.
func (tb *Testbed) CloudImage(t testing.TB) string {
	t.Helper()
	img := filepath.Join(tb.Dir, "FreeBSD-14.2-RELEASE-amd64-BASIC-CLOUDINIT.img")
	if err := sim.WriteImage(img); err != nil {
		t.Fatal(err)
	}
	return img
}

// TemplateSettings are the bhyve.toml lines `template build` needs before
// the template exists: the job user the default provisioning creates, and
// a known_hosts file of the test's own in dir (PinnedKnownHosts fills it)
// where build pins the new template's key.
func TemplateSettings(dir string) []string {
	return []string{
		`ssh.user = "gitlab-runner"`,
		fmt.Sprintf("ssh.known_hosts_file = %q", filepath.Join(dir, "known_hosts")),
	}
}

// PinnedKnownHosts copies the simulated host's pins (the default
// template's) into the known_hosts file of TemplateSettings(dir).
func (tb *Testbed) PinnedKnownHosts(t testing.TB, dir string) {
	t.Helper()
	b, err := os.ReadFile(tb.Host.KnownHostsPath())
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "known_hosts"), b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

var (
	addToRE      = regexp.MustCompile(`(?m)^Add to \S+ \(section \[defaults\].*\):$`)
	settingsLine = regexp.MustCompile(`^  ([a-z_.]+ = "[^"]*")`)
)

// PrintedSettings are the `key = "value"` lines that `template build`
// tells the operator to add, comments dropped.
func PrintedSettings(out string) []string {
	loc := addToRE.FindStringIndex(out)
	if loc == nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(out[loc[1]:], "\n")[1:] {
		m := settingsLine.FindStringSubmatch(l)
		if m == nil {
			break
		}
		lines = append(lines, m[1])
	}
	return lines
}

// WriteSettings rewrites bhyve.toml's [defaults] with extra (see
// fixture.New), as an operator editing it; the runner reads it per job.
func (tb *Testbed) WriteSettings(t testing.TB, extra ...string) {
	t.Helper()
	if err := fixture.WriteSharedSettings(tb.Host, tb.SettingsPath, []string{fixture.Runner}, extra...); err != nil {
		t.Fatal(err)
	}
}

var snapshotTakenRE = regexp.MustCompile(`snapshot (\S+)@(build-\d{8}-\d{6}) taken`)

// SnapshotTaken is the build snapshot that a `template build` or `rotate`
// output reports, or "".
func SnapshotTaken(out, template string) string {
	for _, m := range snapshotTakenRE.FindAllStringSubmatch(out, -1) {
		if m[1] == template {
			return m[2]
		}
	}
	return ""
}

// Snapshots lists a VM's ZFS snapshots as vm-bhyve's datasets show them
// (VMDIR/NAME/.zfs/snapshot).
func (tb *Testbed) Snapshots(t testing.TB, name string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(tb.Host.VMDir(), name, ".zfs", "snapshot"))
	if err != nil {
		t.Fatalf("snapshots of %s: %v", name, err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

var cloneOriginRE = regexp.MustCompile(`(?m)^\s*clone-origin\s*\n\s*(\S+)`)

// CloneOrigin is the TEMPLATE@SNAPSHOT a VM was cloned from, as `vm info`
// reports it ("" when it is no clone or no longer exists).
func (tb *Testbed) CloneOrigin(ctx context.Context, t testing.TB, name string) string {
	t.Helper()
	r, err := tb.Host.VM(ctx, "info", name)
	if err != nil {
		t.Fatalf("vm info %s: %v", name, err)
	}
	m := cloneOriginRE.FindStringSubmatch(r.Stdout)
	if m == nil {
		return ""
	}
	// vm info shows the origin dataset: zroot/vm/TEMPLATE@SNAP.
	return filepath.Base(m[1])
}
