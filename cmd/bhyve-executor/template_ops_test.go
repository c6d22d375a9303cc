package main_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// builtTemplate is a harness with template fbsd built from the image file,
// its host runner at version 17.5.0, and the snapshot build took.
func builtTemplate(t *testing.T) (*harness, string, string) {
	t.Helper()
	h, img, _ := templateHarness(t)
	rb := fakeRunner(t, "17.5.0")
	out, _, code := operator(t, h.sim, h.sim.SettingsPath, "template", "build", "fbsd", "--image", img, "--runner-binary", rb)
	require.Equal(t, 0, code)
	m := regexp.MustCompile(`snapshot fbsd@(build-\d{8}-\d{6}) taken`).FindStringSubmatch(out)
	require.NotNil(t, m, "build names its snapshot")
	return h, rb, m[1]
}

// snapshots lists fbsd's snapshots as ZFS shows them.
func snapshots(t *testing.T, h *harness) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.sim.VMDir(), "fbsd", ".zfs", "snapshot"))
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// vmOK runs a vm subcommand on the simulated host and requires success.
func vmOK(t *testing.T, h *harness, args ...string) {
	t.Helper()
	r, err := h.sim.VM(context.Background(), args...)
	require.NoError(t, err)
	require.Zero(t, r.ExitCode, "vm %v: %s%s", args, r.Stdout, r.Stderr)
}

// TestTemplateCheckNamesEachBrokenTemplate: each way a template breaks
// jobs is caught by template check with what is wrong and a fix line. One
// template is built; each case breaks it the way an operator would (edit
// its disk and snapshot it again, start it, pin a snapshot that is not
// there), checks, and undoes the damage.
func TestTemplateCheckNamesEachBrokenTemplate(t *testing.T) {
	h, rb, _ := builtTemplate(t)
	disk := filepath.Join(h.sim.VMDir(), "fbsd", "disk0.img")
	next := time.Now().Add(time.Hour)
	// breakDisk removes paths from the template's disk and makes that its
	// newest build snapshot, as a bad rotation would; at the end of the
	// case the paths come back in a newer snapshot still.
	breakDisk := func(t *testing.T, rels ...string) {
		snap := func() {
			next = next.Add(time.Hour)
			vmOK(t, h, "snapshot", "fbsd@"+vmbhyve.BuildSnapshotName(next))
		}
		for _, rel := range rels {
			p := filepath.Join(disk, rel)
			require.NoError(t, os.Rename(p, p+".hidden"))
		}
		snap()
		t.Cleanup(func() {
			for _, rel := range rels {
				p := filepath.Join(disk, rel)
				require.NoError(t, os.Rename(p+".hidden", p))
			}
			snap()
		})
	}
	missingSnap := filepath.Join(t.TempDir(), "bhyve.toml")
	kh := strings.TrimSpace(string(must(os.ReadFile(h.sim.SettingsPath))))
	khPath := regexp.MustCompile(`known_hosts_file = "([^"]+)"`).FindStringSubmatch(kh)[1]
	require.NoError(t, fixture.WriteSettings(h.sim.Host, missingSnap, `allowed_images = ["fbsd"]`, `snapshot = "build-20000101-000000"`,
		`ssh.user = "gitlab-runner"`, `ssh.known_hosts_file = "`+khPath+`"`))

	for _, tc := range []struct {
		name     string
		breakIt  func(t *testing.T) (settings, runner string)
		wantCode int
		want     []string // lines of the report, in order
	}{
		{
			name: "no runner binary",
			breakIt: func(t *testing.T) (string, string) {
				breakDisk(t, "usr/local/bin/gitlab-runner")
				return h.sim.SettingsPath, rb
			},
			want: []string{"[WARN] gitlab-runner: not on the job user's PATH in the guest: artifacts and caches will not work",
				"       fix: bhyve-executor template rotate fbsd installs the host's gitlab-runner"},
		},
		{
			name: "wrong runner version",
			breakIt: func(t *testing.T) (string, string) {
				return h.sim.SettingsPath, fakeRunner(t, "17.6.0")
			},
			want: []string{"[WARN] gitlab-runner: guest has 17.5.0, host runs 17.6.0: artifacts and caches will not work",
				"       fix: bhyve-executor template rotate fbsd installs the host's gitlab-runner"},
		},
		{
			name: "host key regenerated",
			breakIt: func(t *testing.T) (string, string) {
				// Keys deleted before the snapshot: every clone's sshd
				// makes its own (rc.d/sshd), none matches the pin. That
				// matters where clones are trusted by the template's pin
				// (host_keys = "template"); with per-VM keys each clone
				// gets a fresh key anyway.
				breakDisk(t, "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub")
				b, err := os.ReadFile(h.sim.SettingsPath)
				require.NoError(t, err)
				section := "[runners.\"" + fixture.Runner + "\"]\n"
				require.Contains(t, string(b), section)
				pinned := filepath.Join(t.TempDir(), "bhyve.toml")
				require.NoError(t, os.WriteFile(pinned, []byte(strings.Replace(string(b), section, section+"host_keys = \"template\"\n", 1)), 0o644))
				return pinned, rb
			},
			wantCode: 1,
			want:     []string{"[FAIL] test boot: ", "       fix: the clone's host key is not the one pinned for fbsd: its host keys were regenerated"},
		},
		{
			name: "no /builds",
			breakIt: func(t *testing.T) (string, string) {
				breakDisk(t, "builds")
				return h.sim.SettingsPath, rb
			},
			wantCode: 1,
			want: []string{"[FAIL] guest dirs: /builds is missing or not writable by gitlab-runner",
				"       fix: install -d -o gitlab-runner /builds in the template (the default provisioning does): bhyve-executor template rotate fbsd"},
		},
		{
			name: "running template",
			breakIt: func(t *testing.T) (string, string) {
				vmOK(t, h, "start", "fbsd")
				waitState(t, h, "fbsd", "Running")
				t.Cleanup(func() {
					vmOK(t, h, "poweroff", "-f", "fbsd")
					waitState(t, h, "fbsd", "Stopped")
				})
				return h.sim.SettingsPath, rb
			},
			wantCode: 1,
			want:     []string{"[FAIL] template: fbsd is Running (", "       fix: stop it (`vm stop fbsd`)", "[FAIL] test boot: skipped because of the failures above"},
		},
		{
			name: "missing snapshot",
			breakIt: func(t *testing.T) (string, string) {
				return missingSnap, rb
			},
			wantCode: 1,
			want:     []string{"[FAIL] snapshot: fbsd@build-20000101-000000 not found", "       fix: with the template stopped: vm snapshot fbsd@build-20000101-000000"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settings, runner := tc.breakIt(t)
			out, _, code := operator(t, h.sim, settings, "template", "check", "fbsd", "--runner-binary", runner)
			assert.Equal(t, tc.wantCode, code)
			rest := "\n" + out
			for _, w := range tc.want {
				i := strings.Index(rest, "\n"+w)
				if !assert.GreaterOrEqual(t, i, 0, "report lacks (in order) %q:\n%s", w, out) {
					return
				}
				rest = rest[i+1:]
			}
			noCloneLeft(t, h)
		})
	}

	out, _, code := operator(t, h.sim, h.sim.SettingsPath, "template", "check", "fbsd", "--runner-binary", rb)
	assert.Equal(t, 0, code, "with every break undone the template passes again")
	assert.Contains(t, out, "all checks passed\n")
}

// waitState waits until `vm list` shows name in state.
func waitState(t *testing.T, h *harness, name, state string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s.*\s` + state)
	require.Eventually(t, func() bool {
		r, err := h.sim.VM(context.Background(), "list")
		return err == nil && re.MatchString(r.Stdout)
	}, 30*time.Second, 50*time.Millisecond, "%s never %s", name, state)
}

// noCloneLeft: `vm list` has the two templates and nothing else.
func noCloneLeft(t *testing.T, h *harness) {
	t.Helper()
	r, err := h.sim.VM(context.Background(), "list")
	require.NoError(t, err)
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n")[1:] {
		names = append(names, strings.Fields(l)[0])
	}
	assert.ElementsMatch(t, []string{"fbsd", h.sim.Template()}, names, "the check's clone is destroyed")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTemplatePruneKeepsTheNewestAndWhatClonesNeed: prune destroys build
// snapshots beyond --keep, never one a clone still depends on, and never a
// snapshot that is no build snapshot.
func TestTemplatePruneKeepsTheNewestAndWhatClonesNeed(t *testing.T) {
	h, _, first := builtTemplate(t)
	base := time.Now()
	second, third := vmbhyve.BuildSnapshotName(base.Add(time.Hour)), vmbhyve.BuildSnapshotName(base.Add(2*time.Hour))
	vmOK(t, h, "snapshot", "fbsd@"+second)
	vmOK(t, h, "snapshot", "fbsd@manual")
	vmOK(t, h, "snapshot", "fbsd@"+third)
	// A job VM still running on the first build.
	vmOK(t, h, "clone", "fbsd@"+first, "ci-sim-runner-77-0")
	t.Cleanup(func() { _, _ = h.sim.VM(context.Background(), "destroy", "-f", "ci-sim-runner-77-0") })

	out, _, code := operator(t, h.sim, h.sim.SettingsPath, "template", "prune", "fbsd", "--keep", "1")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "kept fbsd@"+first+": clones (running jobs) still depend on it; run `template prune fbsd` once they are gone")
	assert.Contains(t, out, "destroyed fbsd@"+second)
	assert.ElementsMatch(t, []string{first, "manual", third}, snapshots(t, h), "ZFS refused the one with a clone; prune did not force it")

	vmOK(t, h, "destroy", "-f", "ci-sim-runner-77-0")
	out, _, code = operator(t, h.sim, h.sim.SettingsPath, "template", "prune", "fbsd", "--keep", "1")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "destroyed fbsd@"+first)
	assert.ElementsMatch(t, []string{"manual", third}, snapshots(t, h), "the newest build and the operator's own snapshot stay")

	out, _, code = operator(t, h.sim, h.sim.SettingsPath, "template", "prune", "fbsd", "--keep", "1")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "1 build snapshot(s) of fbsd, keeping all (--keep 1)")

	_, errOut, code := operator(t, h.sim, h.sim.SettingsPath, "template", "prune", "fbsd", "--keep", "0")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "--keep at least 1")
}

// TestTemplateRollback: rollback goes back one build and destroys the
// newest; when ZFS refuses (a clone of the newest build exists) vm
// rollback still exits 0, and template rollback must say it failed.
func TestTemplateRollback(t *testing.T) {
	h, _, first := builtTemplate(t)
	second := vmbhyve.BuildSnapshotName(time.Now().Add(time.Hour))
	marker := filepath.Join(h.sim.VMDir(), "fbsd", "disk0.img", "etc", "second-build")
	require.NoError(t, os.WriteFile(marker, []byte("2\n"), 0o644))
	vmOK(t, h, "snapshot", "fbsd@"+second)

	// A job VM of the newest build: ZFS refuses the rollback, and the
	// simulated vm-bhyve, like the real one, exits 0 anyway.
	vmOK(t, h, "clone", "fbsd@"+second, "ci-sim-runner-78-0")
	raw, err := h.sim.VM(context.Background(), "rollback", "-r", "fbsd@"+first)
	require.NoError(t, err)
	require.Zero(t, raw.ExitCode, "vm rollback's exit status hides the refusal")
	require.Contains(t, raw.Stderr, "clones of previous snapshots exist")

	out, errOut, code := operator(t, h.sim, h.sim.SettingsPath, "template", "rollback", "fbsd")
	assert.NotEqual(t, 0, code, "the refusal is reported: %s", out)
	assert.Contains(t, errOut, "vm rollback exited 0 but did not roll back")
	assert.Contains(t, errOut, "clones of previous snapshots exist", "zfs's own words are quoted")
	assert.Contains(t, errOut, "if jobs still run on fbsd@"+second+", wait for them to finish and retry")
	assert.Equal(t, []string{first, second}, snapshots(t, h))
	assert.FileExists(t, marker)

	vmOK(t, h, "destroy", "-f", "ci-sim-runner-78-0")
	out, _, code = operator(t, h.sim, h.sim.SettingsPath, "template", "rollback", "fbsd")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "fbsd rolled back to fbsd@"+first+" ("+second+" destroyed)")
	assert.Equal(t, []string{first}, snapshots(t, h))
	assert.NoFileExists(t, marker, "the template's disk is the first build's again")

	_, errOut, code = operator(t, h.sim, h.sim.SettingsPath, "template", "rollback", "fbsd")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "fbsd has 1 build snapshot(s); a rollback needs an older one to go back to")
}

// TestTemplateRotateRefusesAnUncleanShutdown: a template that ignores the
// ACPI power button is powered off after stop_timeout, and no snapshot is
// taken of its unclean disk.
func TestTemplateRotateRefusesAnUncleanShutdown(t *testing.T) {
	h, rb, first := builtTemplate(t)
	require.NoError(t, h.sim.SetFault("fbsd", sim.Fault{IgnoreACPI: true}))
	start := time.Now()
	out, errOut, code := operator(t, h.sim, h.sim.SettingsPath, "template", "rotate", "fbsd", "--runner-binary", rb)
	took := time.Since(start)
	assert.NotEqual(t, 0, code, "%s", out)
	assert.Contains(t, errOut, "did not shut down through ACPI in time and was powered off after 5s")
	assert.Contains(t, errOut, "no snapshot taken of a disk that was not cleanly unmounted: raise stop_timeout")
	assert.Equal(t, []string{first}, snapshots(t, h), "no snapshot of the unclean disk")
	assert.GreaterOrEqual(t, took, 5*time.Second, "stop_timeout (5s in the test settings) was waited for")
	r, err := h.sim.VM(context.Background(), "list")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^fbsd\s.*Stopped`, r.Stdout, "the template is left stopped")
}
