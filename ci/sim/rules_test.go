package sim_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// TestCloneRules checks zfs::clone's order of checks, messages, streams and
// exit codes, and what a successful clone leaves behind.
func TestCloneRules(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})
	vmc := h.VMCommand()
	base := h.Template() + "@" + h.Snapshot()

	// A source that is locked, and a snapshot taken with -f while locked:
	// its run.lock travels into every clone.
	mustVM(t, ctx, h, "clone", base, "locked-src")
	if err := h.SetFault("locked-src", sim.Fault{RunLock: "otherhost"}); err != nil {
		t.Fatal(err)
	}
	if r := vm(t, ctx, h, "snapshot", "locked-src@nolock"); r.ExitCode != 1 ||
		r.Stderr != vmc+": WARNING: locked-src appears to be running on otherhost (locked)\n"+
			vmc+": ERROR: locked-src must be powered off first (use -f to override)\n" {
		t.Fatalf("snapshot of a locked guest without -f: %s", r)
	}
	mustVM(t, ctx, h, "snapshot", "-f", "locked-src@withlock")
	if err := h.SetFault("broken", sim.Fault{Fail: sim.FailClone}); err != nil {
		t.Fatal(err)
	}
	if err := h.SetFault("partial", sim.Fault{Fail: sim.FailCloneRename}); err != nil {
		t.Fatal(err)
	}
	mustVM(t, ctx, h, "clone", base, "existing")

	usage := regexp.MustCompile(`\Avm-bhyve: Bhyve virtual machine management v1\.7\.5\nUsage: vm \.\.\.\n(    .*\n)+\z`)
	for _, tc := range []struct {
		name   string
		args   []string
		stdout string
		usage  bool
		stderr string
		code   int
		check  func(t *testing.T)
	}{
		{name: "from snapshot", args: []string{"clone", base, "c1"}, check: func(t *testing.T) {
			conf := readFile(h.ConfPath("c1"))
			if strings.Contains(conf, "uuid=") || strings.Contains(conf, "network0_mac") {
				t.Errorf("clone kept uuid or MAC:\n%s", conf)
			}
			if !strings.Contains(conf, `network0_switch="public"`) {
				t.Errorf("clone lost its configuration:\n%s", conf)
			}
			for _, f := range []string{"tmpl.conf", "vm-bhyve.log", "run.lock"} {
				if fileExists(filepath.Join(h.VMDir(), "c1", f)) {
					t.Errorf("clone has %s", f)
				}
			}
			if !fileExists(filepath.Join(h.VMDir(), "c1", "disk0", "etc", "ssh", "ssh_host_ed25519_key")) {
				t.Error("clone lacks the template's host key")
			}
			info := mustVM(t, ctx, h, "info", "c1").Stdout
			if !strings.Contains(info, "  clone-origin\n    zroot/vm/tmpl@base\n") {
				t.Errorf("origin not recorded:\n%s", info)
			}
		}},
		{name: "target exists", args: []string{"clone", base, "existing"}, code: 1,
			stderr: vmc + ": ERROR: new guest already exists in " + h.VMDir() + "/existing\n"},
		{name: "unknown source", args: []string{"clone", "nope@base", "c2"}, code: 1,
			stderr: vmc + ": ERROR: nope does not appear to be an existing virtual machine\n"},
		{name: "unknown snapshot", args: []string{"clone", "tmpl@nope", "c2"}, code: 1,
			stderr: vmc + ": ERROR: snapshot zroot/vm/tmpl@nope doesn't seem to exist\n"},
		{name: "missing argument", args: []string{"clone", base}, code: 1, usage: true},
		{name: "bare source locked", args: []string{"clone", "locked-src", "c2"}, code: 1,
			stderr: vmc + ": WARNING: locked-src appears to be running on otherhost (locked)\n"},
		{name: "bare source snapshots it", args: []string{"clone", "tmpl", "c3"}, check: func(t *testing.T) {
			info := mustVM(t, ctx, h, "info", "c3").Stdout
			if !regexp.MustCompile(`clone-origin\n    zroot/vm/tmpl@[0-9a-f]{8}\n`).MatchString(info) {
				t.Errorf("bare clone origin is not an 8-hex snapshot:\n%s", info)
			}
			tinfo := mustVM(t, ctx, h, "info", "tmpl").Stdout
			if n := strings.Count(tinfo, "    zroot/vm/tmpl@"); n != 2 {
				t.Errorf("template has %d snapshots, want base plus the clone's:\n%s", n, tinfo)
			}
		}},
		{name: "snapshot carries run.lock", args: []string{"clone", "locked-src@withlock", "c4"}, check: func(t *testing.T) {
			if got := readFile(filepath.Join(h.VMDir(), "c4", "run.lock")); got != "otherhost\n" {
				t.Errorf("run.lock = %q", got)
			}
		}},
		{name: "zfs clone fails", args: []string{"clone", base, "broken"}, code: 1,
			stderr: "cannot create 'zroot/vm/broken': out of space\n" +
				vmc + ": ERROR: error while cloning dataset zroot/vm/tmpl@base\n",
			check: func(t *testing.T) {
				if fileExists(filepath.Join(h.VMDir(), "broken")) {
					t.Error("failed clone left a directory")
				}
			}},
		{name: "rename fails", args: []string{"clone", base, "partial"}, code: 1,
			stdout: "Unable to rename configuration file to partial.conf\n" +
				"This will need to be renamed manually\n" +
				"Please also remove any uuid or mac address settings, these will be regenerated automatically\n",
			check: func(t *testing.T) {
				if _, ok := states(mustVM(t, ctx, h, "list").Stdout)["partial"]; ok {
					t.Error("partial clone is listed")
				}
				r := vm(t, ctx, h, "destroy", "-f", "partial")
				if r.Stderr != vmc+": ERROR: partial doesn't appear to be a valid virtual machine\n" {
					t.Errorf("destroy of a partial clone: %s", r)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := vm(t, ctx, h, tc.args...)
			if r.ExitCode != tc.code || r.Stderr != tc.stderr {
				t.Errorf("got %s\nwant exit %d stderr %q", r, tc.code, tc.stderr)
			}
			if tc.usage {
				if !usage.MatchString(r.Stdout) {
					t.Errorf("stdout is not the usage text:\n%s", r.Stdout)
				}
			} else if r.Stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.Stdout, tc.stdout)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

// TestGeneraliseStopsAtGap: vm::generalise removes network0_mac,
// network1_mac, ... only up to the first missing index.
func TestGeneraliseStopsAtGap(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	h := sim.New(t, sim.Options{})
	if err := h.AddTemplate("multi", ""); err != nil {
		t.Fatal(err)
	}
	if r, err := h.Sysrc(ctx, "-f", h.ConfPath("multi"), "network1_mac=58:9c:fc:00:00:01",
		"network3_mac=58:9c:fc:00:00:03"); err != nil || r.ExitCode != 0 {
		t.Fatalf("sysrc: %v %s", err, r)
	}
	mustVM(t, ctx, h, "clone", "multi", "m1")
	conf := readFile(h.ConfPath("m1"))
	for key, want := range map[string]bool{"uuid=": false, "network0_mac=": false, "network1_mac=": false, "network3_mac=": true} {
		if strings.Contains(conf, key) != want {
			t.Errorf("%s present=%v, want %v:\n%s", key, !want, want, conf)
		}
	}
}

// TestDestroyRules checks core::destroy's refusals and prompts.
func TestDestroyRules(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})
	vmc := h.VMCommand()
	base := h.Template() + "@" + h.Snapshot()
	for _, n := range []string{"stale", "empty", "foreign", "asked-no", "asked-eof", "forced", "fails-once", "running"} {
		mustVM(t, ctx, h, "clone", base, n)
	}
	for n, f := range map[string]sim.Fault{
		"stale":      {RunLock: sim.LockStale},
		"empty":      {RunLock: sim.LockEmpty},
		"foreign":    {RunLock: "otherhost"},
		"fails-once": {Fail: sim.FailDestroy, FailTimes: 1},
	} {
		if err := h.SetFault(n, f); err != nil {
			t.Fatal(err)
		}
	}
	mustVM(t, ctx, h, "start", "running")
	waitState(t, ctx, h, "running", "Running")

	intact := func(name string) func(t *testing.T) {
		return func(t *testing.T) {
			if !fileExists(h.ConfPath(name)) {
				t.Errorf("%s was removed", name)
			}
		}
	}
	gone := func(name string) func(t *testing.T) {
		return func(t *testing.T) {
			if fileExists(filepath.Join(h.VMDir(), name)) {
				t.Errorf("%s still exists", name)
			}
		}
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		stderr      string
		code        int
		check       func(t *testing.T)
	}{
		{name: "running", args: []string{"destroy", "-f", "running"}, code: 1,
			stderr: vmc + ": WARNING: running appears to be running on bhyvehost (locked)\n", check: intact("running")},
		{name: "stale local lock", args: []string{"destroy", "-f", "stale"}, code: 1,
			stderr: vmc + ": WARNING: stale appears to be running on bhyvehost (locked)\n", check: intact("stale")},
		{name: "empty lock", args: []string{"destroy", "-f", "empty"}, code: 1,
			stderr: vmc + ": WARNING: empty appears to be running on  (locked)\n", check: intact("empty")},
		{name: "foreign lock", args: []string{"destroy", "-f", "foreign"}, code: 1,
			stderr: vmc + ": WARNING: foreign appears to be running on otherhost (locked)\n", check: intact("foreign")},
		{name: "dependent clones", args: []string{"destroy", "-f", "tmpl"}, code: 1,
			stderr: vmc + ": ERROR: failed to destroy ZFS dataset zroot/vm/tmpl\n",
			check: func(t *testing.T) {
				intact("tmpl")(t)
				if !fileExists(filepath.Join(h.VMDir(), "tmpl", ".zfs", "snapshot", "base", "tmpl.conf")) {
					t.Error("template snapshot damaged")
				}
			}},
		{name: "snapshot with dependent clones", args: []string{"destroy", base}, code: 1,
			stderr: "cannot destroy 'zroot/vm/tmpl@base': snapshot has dependent clones\n" +
				"use '-R' to destroy the following datasets:\n" +
				"zroot/vm/asked-eof\nzroot/vm/asked-no\nzroot/vm/empty\nzroot/vm/fails-once\n" +
				"zroot/vm/forced\nzroot/vm/foreign\nzroot/vm/running\nzroot/vm/stale\n" +
				vmc + ": ERROR: failed to remove snapshot zroot/vm/tmpl@base\n"},
		{name: "unknown snapshot", args: []string{"destroy", "tmpl@zzz"}, code: 1,
			stderr: "could not find any snapshots to destroy; check snapshot names.\n" +
				vmc + ": ERROR: failed to remove snapshot zroot/vm/tmpl@zzz\n"},
		{name: "unknown guest", args: []string{"destroy", "-f", "ghost"}, code: 1,
			stderr: vmc + ": ERROR: ghost doesn't appear to be a valid virtual machine\n"},
		{name: "answer n", stdin: "n\n", args: []string{"destroy", "asked-no"}, check: intact("asked-no")},
		{name: "EOF answers yes", args: []string{"destroy", "asked-eof"}, check: gone("asked-eof")},
		{name: "forced", args: []string{"destroy", "-f", "forced"}, check: gone("forced")},
		{name: "zfs fails once", args: []string{"destroy", "-f", "fails-once"}, code: 1,
			stderr: vmc + ": ERROR: failed to destroy ZFS dataset zroot/vm/fails-once\n", check: intact("fails-once")},
		{name: "then succeeds", args: []string{"destroy", "-f", "fails-once"}, check: gone("fails-once")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := h.VMInput(ctx, tc.stdin, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if r.ExitCode != tc.code || r.Stderr != tc.stderr || r.Stdout != "" {
				t.Errorf("got %s\nwant exit %d, no stdout, stderr %q", r, tc.code, tc.stderr)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
	// A destroyed clone leaves its origin snapshot on the template.
	if !fileExists(filepath.Join(h.VMDir(), "tmpl", ".zfs", "snapshot", "base")) {
		t.Error("destroying clones removed the template snapshot")
	}
}

// TestCommandLine covers cmd::find prefixes, usage, version, $0 and the
// preconditions of lib/vm-base, in both version modes.
func TestCommandLine(t *testing.T) {
	for _, mode := range []string{sim.Version16, sim.Version17} {
		t.Run(mode, func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			h := sim.New(t, sim.Options{VersionMode: mode})
			vmc := h.VMCommand()
			version := map[string]string{
				sim.Version16: "vm-bhyve: Bhyve virtual machine management v1.6-devel (rev. 106001)\n",
				sim.Version17: "vm-bhyve: Bhyve virtual machine management v1.7.5\n",
			}[mode]
			failExit := map[string]int{sim.Version16: 0, sim.Version17: 1}[mode]

			for _, tc := range []struct {
				name         string
				args         []string
				code         int
				stdout       string
				stdoutPrefix string
				stderr       string
			}{
				{name: "version", args: []string{"version"}, stdout: version},
				{name: "unique prefix", args: []string{"vers"}, stdout: version},
				{name: "ambiguous prefix", args: []string{"st", "x"}, code: 1, stderr: vmc + ": ERROR: ambiguous command 'st'\n"},
				{name: "no command", args: nil, code: 1, stderr: vmc + ": ERROR: no command specified\n"},
				{name: "unknown command", args: []string{"frobnicate"}, code: 1, stdoutPrefix: version + "Usage: vm ...\n"},
				{name: "list bad option", args: []string{"list", "-x"}, code: 1, stdoutPrefix: version + "Usage: vm ...\n", stderr: "Illegal option -x\n"},
				{name: "start unknown", args: []string{"start", "ghost"}, code: failExit,
					stdout: "Starting ghost\n  ! ghost does not seem to be a valid virtual machine\n"},
				{name: "stop not running", args: []string{"stop", "tmpl"},
					stderr: vmc + ": WARNING: tmpl doesn't appear to be a running virtual machine\n"},
				{name: "poweroff not running", args: []string{"poweroff", "-f", "tmpl"}, code: 1,
					stderr: vmc + ": ERROR: tmpl doesn't appear to be a running virtual machine\n"},
				{name: "info unknown", args: []string{"info", "ghost"}, code: 1,
					stderr: vmc + ": ERROR: unable to locate virtual machine 'ghost'\n"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := vm(t, ctx, h, tc.args...)
					if r.ExitCode != tc.code || r.Stderr != tc.stderr {
						t.Errorf("got %s\nwant exit %d stderr %q", r, tc.code, tc.stderr)
					}
					if tc.stdoutPrefix != "" {
						if !strings.HasPrefix(r.Stdout, tc.stdoutPrefix) {
							t.Errorf("stdout %q does not start with %q", r.Stdout, tc.stdoutPrefix)
						}
					} else if r.Stdout != tc.stdout {
						t.Errorf("stdout %q, want %q", r.Stdout, tc.stdout)
					}
				})
			}

			t.Run("start failure exit code", func(t *testing.T) {
				mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), "nostart")
				if err := h.SetFault("nostart", sim.Fault{Fail: sim.FailStart, FailMessage: "incomplete virtual machine configuration"}); err != nil {
					t.Fatal(err)
				}
				r := vm(t, ctx, h, "start", "nostart")
				want := "Starting nostart\n  * found guest in " + h.VMDir() + "/nostart\n  ! incomplete virtual machine configuration\n"
				if r.ExitCode != failExit || r.Stdout != want || r.Stderr != "" {
					t.Errorf("got %s\nwant exit %d stdout %q", r, failExit, want)
				}
			})

			t.Run("$0 as invoked, environment cleared", func(t *testing.T) {
				link := filepath.Join(t.TempDir(), "sbin", "vm")
				if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(vmc, link); err != nil {
					t.Fatal(err)
				}
				out, err := exec.CommandContext(ctx, "env", "-i", link, "destroy", "-f", "ghost").CombinedOutput()
				want := link + ": ERROR: ghost doesn't appear to be a valid virtual machine\n"
				if string(out) != want || exitCode(err) != 1 {
					t.Errorf("got %q (%v), want %q", out, err, want)
				}
				out, err = exec.CommandContext(ctx, "env", "-i", link, "list").CombinedOutput()
				if err != nil || !strings.HasPrefix(string(out), "NAME ") {
					t.Errorf("list with env -i: %v\n%s", err, out)
				}
			})

			t.Run("root only", func(t *testing.T) {
				// t.TempDir is 0700; /usr/local/sbin/vm is world-executable.
				for _, d := range []string{filepath.Dir(h.Root()), h.Root()} {
					if err := os.Chmod(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				out, err := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
					vmc, "list").CombinedOutput()
				want := vmc + ": ERROR: virtual machines can only be managed by root\n"
				if string(out) != want || exitCode(err) != 1 {
					t.Errorf("got %q (%v), want %q", out, err, want)
				}
			})
		})
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
