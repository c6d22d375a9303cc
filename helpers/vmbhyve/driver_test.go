package vmbhyve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"ci-1":                   true,
		"runner-7_job-12345":     true,
		"a1":                     true,
		"a":                      false, // vm-bhyve wants at least two characters
		"ci.1":                   false, // pgrep regex wildcard
		"-rf":                    false,
		"ci-":                    false,
		"Ci-1":                   false,
		"ci 1":                   false,
		"ci/1":                   false,
		"":                       false,
		string(make([]byte, 10)): false,
	} {
		err := ValidName(name)
		assert.Equal(t, ok, err == nil, "%q: %v", name, err)
	}
	assert.NoError(t, ValidName("a"+string(make([]rune, 0))+"bcdefghij"+repeat("x", 221)))
	assert.Error(t, ValidName(repeat("x", 232)))
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestStart(t *testing.T) {
	booting := "Starting ci-1\n  * found guest in /zroot/vm/ci-1\n  * booting...\n"
	tests := []struct {
		name     string
		answer   fakeResult
		wantErr  error  // a class, or nil for success
		wantMsg  string // vm-bhyve's words the error must quote
		wantCode int
	}{
		{name: "accepted", answer: fakeResult{stdout: booting}},
		{name: "resuming saved state (1.7+)", answer: fakeResult{stdout: "Starting ci-1\n  * found guest in /zroot/vm/ci-1\n  * found saved vm state, resuming...\n"}},
		{
			name:    "1.6 refuses with exit 0",
			answer:  fakeResult{stdout: "Starting ci-1\n  * found guest in /zroot/vm/ci-1\n  ! guest appears to be running already\n"},
			wantErr: ErrBusy, wantMsg: "guest appears to be running already", wantCode: 0,
		},
		{
			name:    "1.7 refuses with exit 1",
			answer:  fakeResult{stdout: "Starting ci-1\n  * found guest in /zroot/vm/ci-1\n  ! guest appears to be running already\n", code: 1},
			wantErr: ErrBusy, wantMsg: "guest appears to be running already", wantCode: 1,
		},
		{
			name:    "1.6 unknown guest with exit 0",
			answer:  fakeResult{stdout: "Starting ci-1\n  ! ci-1 does not seem to be a valid virtual machine\n"},
			wantErr: ErrNotFound, wantMsg: "ci-1 does not seem to be a valid virtual machine",
		},
		{
			name:    "incomplete configuration",
			answer:  fakeResult{stdout: "Starting ci-1\n  * found guest in /zroot/vm/ci-1\n  ! incomplete virtual machine configuration\n"},
			wantErr: errUnclassified, wantMsg: "incomplete virtual machine configuration",
		},
		{
			name:    "1.7 non-zero exit without a ! line",
			answer:  fakeResult{stdout: booting, stderr: "something odd\n", code: 3},
			wantErr: errUnclassified, wantMsg: "something odd", wantCode: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, fake := newDriver(t, script(t, map[string][]fakeResult{"start": {tt.answer}}))
			err := d.Start(context.Background(), "ci-1")
			assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "start", "ci-1"}}, fake.Calls())
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Contains(t, err.Error(), "sudo -n "+vmPath+" start ci-1")
			var ce *CommandError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.wantCode, ce.ExitCode)
			if tt.wantErr != errUnclassified {
				assert.ErrorIs(t, err, tt.wantErr)
			}
			for _, class := range []error{ErrNotFound, ErrBusy, ErrExists, ErrNotRunning} {
				if class != tt.wantErr {
					assert.NotErrorIs(t, err, class)
				}
			}
		})
	}
}

var errUnclassified = errors.New("an error of no class")

func TestStartRejectsBadNameWithoutRunning(t *testing.T) {
	d, fake := newDriver(t, script(t, nil))
	for _, name := range []string{"ci.1", "-f", ""} {
		assert.Error(t, d.Start(context.Background(), name))
		assert.Error(t, d.Stop(context.Background(), name, time.Second))
		assert.Error(t, d.Destroy(context.Background(), name))
		assert.Error(t, d.Clone(context.Background(), "tmpl", "base", name))
		assert.Error(t, d.SetConf(context.Background(), name, "a=b"))
	}
	assert.Empty(t, fake.Calls())
}

func TestStop(t *testing.T) {
	t.Run("ACPI ignored: escalates to poweroff -f", func(t *testing.T) {
		var poweredOff atomic.Bool
		answers := script(t, map[string][]fakeResult{
			"stop":     {{stdout: "Sending ACPI shutdown to ci-1\n"}},
			"poweroff": {{}},
		})
		d, fake := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				if poweredOff.Load() {
					return listing(row("ci-1", "Stopped"))
				}
				return listing(row("ci-1", "Running (4242)"))
			case "poweroff":
				poweredOff.Store(true)
			}
			return answers(argv)
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 50*time.Millisecond))

		subs := fake.subcommands()
		assert.Equal(t, "list", subs[0])
		assert.Equal(t, "stop", subs[1])
		assert.Equal(t, "list", subs[len(subs)-1])
		assert.Contains(t, fake.Calls(), []string{"sudo", "-n", vmPath, "stop", "ci-1"})
		assert.Contains(t, fake.Calls(), []string{"sudo", "-n", vmPath, "poweroff", "-f", "ci-1"})
		assert.Greater(t, indexOf(subs, "poweroff"), indexOf(subs, "stop"))
		assert.Greater(t, count(subs, "list"), 2, "must have polled while waiting for ACPI")
	})

	t.Run("ACPI honoured: no poweroff", func(t *testing.T) {
		var stopped atomic.Bool
		d, fake := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				if stopped.Load() {
					return listing(row("ci-1", "Stopped"))
				}
				return listing(row("ci-1", "Running (4242)"))
			case "stop":
				// Running → Locked (tap cleanup) → Stopped happens in
				// the background; shortcut it.
				stopped.Store(true)
				return fakeResult{stdout: "Sending ACPI shutdown to ci-1\n"}
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 10*time.Second))
		assert.NotContains(t, fake.subcommands(), "poweroff")
	})

	t.Run("locked while cleaning up counts as not yet stopped", func(t *testing.T) {
		lists := 0
		d, _ := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				lists++
				switch {
				case lists == 1:
					return listing(row("ci-1", "Running (4242)"))
				case lists < 4:
					return listing(row("ci-1", "Locked (buildhost)"))
				}
				return listing(row("ci-1", "Stopped"))
			case "stop":
				return fakeResult{stdout: "Sending ACPI shutdown to ci-1\n"}
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 10*time.Second))
		assert.Equal(t, 4, lists)
	})

	t.Run("already stopped", func(t *testing.T) {
		d, fake := newDriver(t, script(t, map[string][]fakeResult{"list": {listing(row("ci-1", "Stopped"))}}))
		require.NoError(t, d.Stop(context.Background(), "ci-1", time.Second))
		assert.Equal(t, []string{"list"}, fake.subcommands())
	})

	t.Run("not listed", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{"list": {listing(row("other", "Running (1)"))}}))
		err := d.Stop(context.Background(), "ci-1", time.Second)
		assert.ErrorIs(t, err, ErrNotFound)
	})

	t.Run("poweroff races with the guest stopping", func(t *testing.T) {
		lists := 0
		d, _ := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				lists++
				if lists == 1 {
					return listing(row("ci-1", "Running (4242)"))
				}
				return listing(row("ci-1", "Stopped"))
			case "poweroff":
				return vmErr("ci-1 doesn't appear to be a running virtual machine")
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 0))
	})

	t.Run("acpiTimeout 0 powers off at once", func(t *testing.T) {
		var off atomic.Bool
		d, fake := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				if off.Load() {
					return listing(row("ci-1", "Stopped"))
				}
				return listing(row("ci-1", "Running (99)"))
			case "poweroff":
				off.Store(true)
				return fakeResult{}
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 0))
		assert.Equal(t, []string{"list", "poweroff", "list"}, fake.subcommands())
	})

	t.Run("bootloader stage gets vm stop even without an ACPI wait", func(t *testing.T) {
		var loaderKilled atomic.Bool
		d, fake := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				if loaderKilled.Load() {
					return listing(row("ci-1", "Stopped"))
				}
				return listing(row("ci-1", "Bootloader (99)"))
			case "stop":
				// core::stop: "Guest ci-1 is in bootloader stage, do you
				// wish to force exit (y/n)?" read EOF, which means yes.
				loaderKilled.Store(true)
				return fakeResult{stdout: "Killing ci-1\n"}
			case "poweroff":
				return vmErr("ci-1 doesn't appear to be a running virtual machine")
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 0))
		// poweroff cannot end a loader (vm-bhyve #466): not sent.
		assert.Equal(t, []string{"list", "stop", "list"}, fake.subcommands())
	})

	t.Run("a guest caught starting is stopped in every stage it reaches", func(t *testing.T) {
		// vm::run: run.lock (Locked), then bhyveload (Bootloader), then
		// bhyve (Running). Stop must not sit in a wait while a Locked guest
		// goes on to boot: each new stage gets its own action.
		var lists atomic.Int32
		var loaderKilled, off atomic.Bool
		d, fake := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "list":
				n := lists.Add(1)
				switch {
				case off.Load():
					return listing(row("ci-1", "Stopped"))
				case n <= 2:
					return listing(row("ci-1", "Locked (buildhost)"))
				case !loaderKilled.Load():
					return listing(row("ci-1", "Bootloader (98)"))
				}
				// A loader that stops no guest: _run goes on to bhyve.
				return listing(row("ci-1", "Running (99)"))
			case "stop":
				loaderKilled.Store(true)
				return fakeResult{stdout: "Killing ci-1\n"}
			case "poweroff":
				off.Store(true)
				return fakeResult{}
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Stop(context.Background(), "ci-1", 0))
		assert.Equal(t, []string{"list", "list", "list", "stop", "list", "poweroff", "list"}, fake.subcommands())
	})

	t.Run("Stopped right after Start is not final while _run is under way", func(t *testing.T) {
		// core::__start has launched `vm _run`, which logged "initialising"
		// but has not reached vm::lock: the guest lists Stopped, then boots.
		var lists atomic.Int32
		var loaderKilled atomic.Bool
		var d *Driver
		d, fake := newDriver(t, func(argv []string) fakeResult {
			switch subcommand(argv) {
			case "start":
				writeGuestLog(t, d, "ci-1", "initialising")
				return fakeResult{stdout: "Starting ci-1\n  * found guest in /vm/ci-1\n  * booting...\n"}
			case "list":
				switch n := lists.Add(1); {
				case loaderKilled.Load():
					return listing(row("ci-1", "Stopped"))
				case n <= 3:
					return listing(row("ci-1", "Stopped"))
				}
				return listing(row("ci-1", "Bootloader (98)"))
			case "stop":
				loaderKilled.Store(true)
				writeGuestLog(t, d, "ci-1", "fatal; loader returned error 143")
				return fakeResult{stdout: "Killing ci-1\n"}
			}
			t.Errorf("unexpected %q", argv)
			return fakeResult{code: 1}
		})
		require.NoError(t, d.Start(context.Background(), "ci-1"))
		require.NoError(t, d.Stop(context.Background(), "ci-1", 0))
		assert.Equal(t, []string{"start", "list", "list", "list", "list", "stop", "list"}, fake.subcommands())
	})

	t.Run("stale lock never clears: error names the state", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{
			"list":     {listing(row("ci-1", "Locked (buildhost)"))},
			"stop":     {{stderr: vmPath + ": WARNING: ci-1 doesn't appear to be a running virtual machine\n"}},
			"poweroff": {vmErr("ci-1 doesn't appear to be a running virtual machine")},
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		err := d.Stop(ctx, "ci-1", 20*time.Millisecond)
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "last state seen: Locked (buildhost)")
	})

	t.Run("poweroff fails for another reason", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{
			"list":     {listing(row("ci-1", "Running (4242)"))},
			"poweroff": {{stderr: "bhyvectl: something broke\n", code: 2}},
		}))
		err := d.Stop(context.Background(), "ci-1", 0)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "bhyvectl: something broke")
	})
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func TestDestroy(t *testing.T) {
	tests := []struct {
		name    string
		answer  fakeResult
		wantErr error
		wantMsg string
	}{
		{name: "destroyed", answer: fakeResult{}},
		{name: "already gone", answer: vmErr("ci-1 doesn't appear to be a valid virtual machine"),
			wantErr: ErrNotFound, wantMsg: "ci-1 doesn't appear to be a valid virtual machine"},
		{name: "running", answer: vmWarnExit("ci-1 appears to be running locally (vmm exists)"),
			wantErr: ErrBusy, wantMsg: "ci-1 appears to be running locally (vmm exists)"},
		{name: "locked", answer: vmWarnExit("ci-1 appears to be running on buildhost (locked)"),
			wantErr: ErrBusy, wantMsg: "ci-1 appears to be running on buildhost (locked)"},
		{name: "dependent clones", answer: vmErr("failed to destroy ZFS dataset zroot/vm/ci-1"),
			wantErr: errUnclassified, wantMsg: "failed to destroy ZFS dataset zroot/vm/ci-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, fake := newDriver(t, script(t, map[string][]fakeResult{"destroy": {tt.answer}}))
			err := d.Destroy(context.Background(), "ci-1")
			assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "destroy", "-f", "ci-1"}}, fake.Calls())
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.NotContains(t, err.Error(), "ERROR:")
			assert.NotContains(t, err.Error(), "WARNING:")
			if tt.wantErr == errUnclassified {
				assert.NotErrorIs(t, err, ErrNotFound)
				assert.NotErrorIs(t, err, ErrBusy)
			} else {
				assert.ErrorIs(t, err, tt.wantErr)
			}
			assert.Equal(t, failure.System, failure.KindOf(err))
		})
	}

	t.Run("idempotent from the caller's side", func(t *testing.T) {
		answers := []fakeResult{{}, vmErr("ci-1 doesn't appear to be a valid virtual machine")}
		d, _ := newDriver(t, script(t, map[string][]fakeResult{"destroy": answers}))
		require.NoError(t, d.Destroy(context.Background(), "ci-1"))
		err := d.Destroy(context.Background(), "ci-1")
		assert.ErrorIs(t, err, ErrNotFound)
	})
}

func TestClone(t *testing.T) {
	tests := []struct {
		name      string
		answer    fakeResult
		wantErr   error
		wantMsg   string
		wantKind  failure.Kind
		wantNoTag bool
	}{
		{name: "silent success", answer: fakeResult{}},
		{name: "name taken", answer: vmErr("new guest already exists in /zroot/vm/ci-1"),
			wantErr: ErrExists, wantMsg: "new guest already exists in /zroot/vm/ci-1", wantKind: failure.System},
		{name: "no template", answer: vmErr("tmpl does not appear to be an existing virtual machine"),
			wantErr: ErrNotFound, wantMsg: "tmpl does not appear to be an existing virtual machine", wantKind: failure.Config},
		{name: "no snapshot", answer: vmErr("snapshot zroot/vm/tmpl@base doesn't seem to exist"),
			wantErr: ErrNotFound, wantMsg: "snapshot zroot/vm/tmpl@base doesn't seem to exist", wantKind: failure.Config},
		{name: "not zfs", answer: vmErr("cannot clone guests on non-zfs datastores"),
			wantErr: errUnclassified, wantMsg: "cannot clone guests on non-zfs datastores", wantKind: failure.System},
		{name: "zfs clone failed", answer: vmErr("error while cloning dataset zroot/vm/tmpl@base"),
			wantErr: errUnclassified, wantMsg: "error while cloning dataset zroot/vm/tmpl@base", wantKind: failure.System},
		{name: "conf rename failed (stdout, exit 1)", answer: fakeResult{code: 1, stdout: "Unable to rename configuration file to ci-1.conf\nThis will need to be renamed manually\nPlease also remove any uuid or mac address settings, these will be regenerated automatically\n"},
			wantErr: errUnclassified, wantMsg: "Unable to rename configuration file to ci-1.conf", wantKind: failure.System},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, fake := newDriver(t, script(t, map[string][]fakeResult{"clone": {tt.answer}}))
			err := d.Clone(context.Background(), "tmpl", "base", "ci-1")
			assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "clone", "tmpl@base", "ci-1"}}, fake.Calls())
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.NotContains(t, err.Error(), vmPath+": ERROR:")
			if tt.wantErr != errUnclassified {
				assert.ErrorIs(t, err, tt.wantErr)
			}
			assert.Equal(t, tt.wantKind, failure.KindOf(err))
			var ce *CommandError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, 1, ce.ExitCode)
		})
	}

	t.Run("template names may have dots, job names may not", func(t *testing.T) {
		d, fake := newDriver(t, script(t, map[string][]fakeResult{"clone": {{}}}))
		require.NoError(t, d.Clone(context.Background(), "FreeBSD-14.1", "base-2024.06", "ci-1"))
		assert.Equal(t, []string{"sudo", "-n", vmPath, "clone", "FreeBSD-14.1@base-2024.06", "ci-1"}, fake.Calls()[0])
		for _, args := range [][3]string{{"-tmpl", "base", "ci-1"}, {"tmpl", "-r", "ci-1"}, {"tmpl", "a@b", "ci-1"}, {"tmpl", "a/b", "ci-1"}, {"tmpl", "", "ci-1"}} {
			err := d.Clone(context.Background(), args[0], args[1], args[2])
			assert.Error(t, err, args)
			assert.Equal(t, failure.Config, failure.KindOf(err), args)
		}
		assert.Len(t, fake.Calls(), 1)
	})
}

func TestWaitState(t *testing.T) {
	t.Run("returns the row once the predicate holds", func(t *testing.T) {
		d, fake := newDriver(t, script(t, map[string][]fakeResult{"list": {
			listing(row("ci-1", "Stopped")),
			listing(row("ci-1", "Locked (buildhost)")),
			listing(row("ci-1", "Bootloader (5)")),
			listing(row("ci-1", "Running (4242)")),
		}}))
		vm, err := d.WaitState(context.Background(), "ci-1", InState(StateRunning))
		require.NoError(t, err)
		assert.Equal(t, 4242, vm.PID)
		assert.Len(t, fake.Calls(), 4)
	})

	t.Run("timeout names the last state", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{"list": {listing(row("ci-1", "Bootloader (5)"))}}))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := d.WaitState(ctx, "ci-1", InState(StateRunning))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "last state seen: Bootloader (5)")
	})

	t.Run("a guest that is not listed", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{"list": {listing(row("ci-2", "Running (1)")), listing()}}))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := d.WaitState(ctx, "ci-1", InState(StateRunning))
		assert.Contains(t, err.Error(), "last state seen: not listed")

		_, err = d.WaitState(context.Background(), "ci-1", Gone)
		assert.NoError(t, err)
	})

	t.Run("list failures are retried and reported", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{"list": {
			{stdout: "garbage\n"},
			listing(row("ci-1", "Running (7)")),
		}}))
		vm, err := d.WaitState(context.Background(), "ci-1", InState(StateRunning))
		require.NoError(t, err)
		assert.Equal(t, 7, vm.PID)

		d, _ = newDriver(t, script(t, map[string][]fakeResult{"list": {{stdout: "garbage\n"}}}))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err = d.WaitState(ctx, "ci-1", InState(StateRunning))
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), `"garbage"`)
	})

	t.Run("setup errors end the wait at once", func(t *testing.T) {
		d, fake := newDriver(t, script(t, map[string][]fakeResult{"list": {{stderr: "sudo: a password is required\n", code: 1}}}))
		_, err := d.WaitState(context.Background(), "ci-1", InState(StateRunning))
		assert.ErrorIs(t, err, ErrPrivilege)
		assert.Len(t, fake.Calls(), 1)
	})
}

// TestPerVMSerialisation checks that mutating commands on one VM never
// overlap while different VMs run in parallel.
func TestPerVMSerialisation(t *testing.T) {
	t.Run("same name never overlaps", func(t *testing.T) {
		var inFlight, maxInFlight atomic.Int32
		release := make(chan struct{})
		entered := make(chan struct{}, 10)
		d, fake := newDriver(t, func(argv []string) fakeResult {
			n := inFlight.Add(1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			entered <- struct{}{}
			<-release
			inFlight.Add(-1)
			return fakeResult{stdout: "Starting ci-1\n  * booting...\n"}
		})
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Go(func() { errs[i] = d.Start(context.Background(), "ci-1") })
		}
		<-entered
		// The second Start is blocked on the VM's lock, not in vm start.
		select {
		case <-entered:
			t.Error("second vm start ran while the first was still running")
		case <-time.After(100 * time.Millisecond):
		}
		assert.Len(t, fake.Calls(), 1)
		close(release)
		wg.Wait()
		assert.NoError(t, errs[0])
		assert.NoError(t, errs[1])
		assert.Len(t, fake.Calls(), 2)
		assert.Equal(t, int32(1), maxInFlight.Load())
	})

	t.Run("mixed operations on one name are serialised too", func(t *testing.T) {
		var inFlight, overlaps atomic.Int32
		d, _ := newDriver(t, func(argv []string) fakeResult {
			if inFlight.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inFlight.Add(-1)
			time.Sleep(2 * time.Millisecond)
			switch subcommand(argv) {
			case "list":
				return listing(row("ci-1", "Stopped"))
			case "start":
				return fakeResult{stdout: "Starting ci-1\n"}
			}
			return fakeResult{}
		})
		var wg sync.WaitGroup
		ctx := context.Background()
		for range 5 {
			wg.Go(func() { assert.NoError(t, d.Start(ctx, "ci-1")) })
			wg.Go(func() { assert.NoError(t, d.Destroy(ctx, "ci-1")) })
			wg.Go(func() { assert.NoError(t, d.Clone(ctx, "tmpl", "base", "ci-1")) })
			wg.Go(func() { assert.NoError(t, d.Stop(ctx, "ci-1", time.Second)) })
		}
		wg.Wait()
		assert.Zero(t, overlaps.Load())
	})

	t.Run("different names overlap", func(t *testing.T) {
		var inFlight atomic.Int32
		bothIn := make(chan struct{})
		var once sync.Once
		d, _ := newDriver(t, func(argv []string) fakeResult {
			if inFlight.Add(1) == 2 {
				once.Do(func() { close(bothIn) })
			}
			select {
			case <-bothIn:
			case <-time.After(5 * time.Second):
				t.Error("vm start for the other VM never ran concurrently")
			}
			return fakeResult{stdout: "Starting\n"}
		})
		var wg sync.WaitGroup
		for _, name := range []string{"ci-1", "ci-2"} {
			wg.Go(func() { assert.NoError(t, d.Start(context.Background(), name)) })
		}
		wg.Wait()
	})

	t.Run("waiting for the lock honours ctx", func(t *testing.T) {
		release := make(chan struct{})
		d, _ := newDriver(t, func(argv []string) fakeResult {
			<-release
			return fakeResult{}
		})
		done := make(chan error)
		go func() { done <- d.Destroy(context.Background(), "ci-1") }()
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		err := d.Destroy(ctx, "ci-1")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		close(release)
		assert.NoError(t, <-done)
		assert.Empty(t, d.locks.m, "lock entries must not leak")
	})
}

func TestVersion(t *testing.T) {
	tests := []struct {
		out     string
		want    string
		atLeast bool // 1.7 or later
		rev     int
	}{
		{out: "vm-bhyve: Bhyve virtual machine management v1.6-devel (rev. 106001)\n", want: "1.6-devel", rev: 106001},
		{out: "vm-bhyve: Bhyve virtual machine management v1.5 (rev. 105102)\n", want: "1.5", rev: 105102},
		{out: "vm-bhyve: Bhyve virtual machine management v1.7.5\n", want: "1.7.5", atLeast: true},
		{out: "vm-bhyve: Bhyve virtual machine management v1.7.0\n", want: "1.7.0", atLeast: true},
		{out: "vm-bhyve: Bhyve virtual machine management v1.8-devel\n", want: "1.8-devel", atLeast: true},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			d, fake := newDriver(t, script(t, map[string][]fakeResult{"version": {{stdout: tt.out}}}))
			got, err := d.Version(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "version"}}, fake.Calls())

			v, err := ParseVersion(got)
			require.NoError(t, err)
			assert.Equal(t, tt.atLeast, v.AtLeast(1, 7))
			full, err := ParseVersion(tt.out)
			require.NoError(t, err)
			assert.Equal(t, tt.rev, full.Rev)
		})
	}
	_, err := ParseVersion("unable to locate vm-bhyve libraries\n")
	assert.ErrorContains(t, err, "unable to locate vm-bhyve libraries")
}

func TestSetupErrors(t *testing.T) {
	tests := []struct {
		name      string
		privilege []string
		answer    fakeResult
		wantErr   error
		wantInMsg []string
	}{
		{name: "sudo wants a password", privilege: []string{"sudo", "-n"},
			answer:  fakeResult{stderr: "sudo: a password is required\n", code: 1},
			wantErr: ErrPrivilege, wantInMsg: []string{"sudo: a password is required", "NOPASSWD", vmPath}},
		{name: "sudo has no rule", privilege: []string{"/usr/local/bin/sudo", "-n"},
			answer:  fakeResult{stderr: "Sorry, user ci is not allowed to execute '/usr/local/sbin/vm list' as root on host.\n", code: 1},
			wantErr: ErrPrivilege, wantInMsg: []string{"not allowed to execute", "NOPASSWD"}},
		{name: "doas authentication failed", privilege: []string{"doas", "-n"},
			answer:  fakeResult{stderr: "doas: Authentication failed\n", code: 1},
			wantErr: ErrPrivilege, wantInMsg: []string{"doas: Authentication failed", "permit nopass", vmPath}},
		{name: "doas wants a password", privilege: []string{"doas", "-n"},
			answer:  fakeResult{stderr: "doas: a password is required\n", code: 1},
			wantErr: ErrPrivilege, wantInMsg: []string{"doas: a password is required", "permit nopass"}},
		{name: "doas has no rule", privilege: []string{"doas", "-n"},
			answer:  fakeResult{stderr: "doas: Operation not permitted\n", code: 1},
			wantErr: ErrPrivilege, wantInMsg: []string{"Operation not permitted", "doas.conf"}},
		{name: "no privilege prefix and not root", privilege: nil,
			answer:  vmErr("virtual machines can only be managed by root"),
			wantErr: ErrPrivilege, wantInMsg: []string{"virtual machines can only be managed by root", "sudo -n"}},
		{name: "vm missing behind sudo", privilege: []string{"sudo", "-n"},
			answer:  fakeResult{stderr: "sudo: " + vmPath + ": command not found\n", code: 1},
			wantErr: ErrMissingBinary, wantInMsg: []string{"command not found", "sysutils/vm-bhyve"}},
		{name: "vm missing behind doas", privilege: []string{"doas", "-n"},
			answer:  fakeResult{stderr: "doas: " + vmPath + ": No such file or directory\n", code: 1},
			wantErr: ErrMissingBinary, wantInMsg: []string{"No such file or directory", "sysutils/vm-bhyve"}},
		{name: "vm_enable unset", privilege: []string{"sudo", "-n"},
			answer:  vmErr("$vm_enable is not enabled in /etc/rc.conf!"),
			wantErr: ErrHostSetup, wantInMsg: []string{"$vm_enable is not enabled", "sysrc vm_enable=YES"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newDriver(t, script(t, map[string][]fakeResult{"list": {tt.answer}}))
			d.Privilege = tt.privilege
			_, err := d.List(context.Background())
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, failure.Config, failure.KindOf(err), "setup problems are the operator's to fix")
			for _, s := range tt.wantInMsg {
				assert.Contains(t, err.Error(), s)
			}
			var ce *CommandError
			require.ErrorAs(t, err, &ce)
			assert.NotEmpty(t, ce.Hint)
		})
	}

	t.Run("an unrelated failure under sudo is not a privilege problem", func(t *testing.T) {
		d, _ := newDriver(t, script(t, map[string][]fakeResult{"destroy": {vmErr("failed to destroy ZFS dataset zroot/vm/ci-1")}}))
		err := d.Destroy(context.Background(), "ci-1")
		assert.NotErrorIs(t, err, ErrPrivilege)
		assert.Equal(t, failure.System, failure.KindOf(err))
	})
}

func TestCommandErrorText(t *testing.T) {
	e := &CommandError{
		Argv:     []string{"sudo", "-n", vmPath, "destroy", "-f", "ci-1"},
		ExitCode: 1,
		Stderr:   vmPath + ": ERROR: failed to destroy ZFS dataset zroot/vm/ci-1\n",
		Err:      exitStatus(1),
	}
	assert.Equal(t, "failed to destroy ZFS dataset zroot/vm/ci-1 (sudo -n /usr/local/sbin/vm destroy -f ci-1: exit status 1)", e.Error())

	e = &CommandError{Argv: []string{vmPath, "list"}, ExitCode: -1, Err: context.Canceled}
	assert.Equal(t, "command failed (/usr/local/sbin/vm list: context canceled)", e.Error())
	assert.ErrorIs(t, e, context.Canceled)

	e = &CommandError{Argv: []string{vmPath, "list"}, ExitCode: 1, Stdout: "Usage: vm ...\n" + repeat("x", 1000), Err: exitStatus(1)}
	assert.Less(t, len(e.Error()), 600, "output is clipped")
}

// writeGuestLog appends one util::log line to NAME/vm-bhyve.log, as vm _run does.
func writeGuestLog(t *testing.T, d *Driver, name, msg string) {
	t.Helper()
	dir := filepath.Join(d.VMDir, name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	f, err := os.OpenFile(filepath.Join(dir, "vm-bhyve.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	_, err = fmt.Fprintf(f, "2026-01-02T03:04:05+00:00: %s\n", msg)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}
