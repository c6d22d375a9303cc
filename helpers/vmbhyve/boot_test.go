package vmbhyve

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// guestRun plays `vm _run` for Boot's tests: `vm start` appends the given
// vm-bhyve.log lines (as util::log does) and from then on `vm list` shows
// state.
type guestRun struct {
	mu      sync.Mutex
	started bool
	state   string
}

func (g *guestRun) handler(t *testing.T, d **Driver, name string, stamp string, lines []string, state string) func([]string) fakeResult {
	return func(argv []string) fakeResult {
		g.mu.Lock()
		defer g.mu.Unlock()
		switch subcommand(argv) {
		case "start":
			g.started, g.state = true, state
			f, err := os.OpenFile(filepath.Join((*d).VMDir, name, "vm-bhyve.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			require.NoError(t, err)
			for _, l := range lines {
				_, err = f.WriteString(stamp + ": " + l + "\n")
				require.NoError(t, err)
			}
			require.NoError(t, f.Close())
			return fakeResult{stdout: "Starting " + name + "\n  * found guest in /vm/" + name + "\n  * booting...\n"}
		case "list":
			if !g.started {
				return listing(row(name, "Stopped"))
			}
			return listing(row(name, g.state))
		}
		t.Errorf("unexpected command %v", argv)
		return fakeResult{code: 1}
	}
}

func TestBootReadsVMBhyveLogAndListsRarely(t *testing.T) {
	const name = "ci-1"
	initialising := []string{"initialising", " [loader: uefi-custom]", " [cpu: 2]"}
	tests := map[string]struct {
		stamp     string
		earlier   string // already in vm-bhyve.log before this start
		lines     []string
		state     string
		kind      failure.Kind
		early     bool
		message   string
		wantLists int
	}{
		"vm _run gives up before vm::lock (1.6 stamps)": {
			stamp: "Jan 02 15:04:05",
			lines: append(initialising, "fatal; unable to locate firmware /vm/.config/BHYVE_UEFI.fd"),
			state: "Stopped", kind: failure.Permanent, early: true,
			message:   "vm-bhyve gave up starting ci-1 before booting it: fatal; unable to locate firmware /vm/.config/BHYVE_UEFI.fd",
			wantLists: 1,
		},
		"vm _run gives up before vm::lock (1.7 stamps)": {
			stamp: "2024-01-02T15:04:05+01:00",
			lines: append(initialising, "fatal; unable to start - missing required configuration"),
			state: "Stopped", kind: failure.Permanent, early: true,
			message:   "fatal; unable to start - missing required configuration",
			wantLists: 1,
		},
		"bhyve exits during boot": {
			stamp: "Jan 02 15:04:05",
			lines: append(initialising, "booting", "starting bhyve (run 1)", "bhyve exited with status 4", "stopped"),
			state: "Stopped", kind: failure.System,
			message:   "ci-1 stopped while booting: vm-bhyve.log gives no reason",
			wantLists: 1,
		},
		"running": {
			stamp:     "Jan 02 15:04:05",
			lines:     append(initialising, "booting", "starting bhyve (run 1)"),
			state:     "Running (4242)",
			wantLists: 1,
		},
		"an earlier run's fatal line is not this start's": {
			stamp:     "Jan 02 15:04:05",
			earlier:   "Jan 01 00:00:00: fatal; loader returned error 1\nJan 01 00:00:00: stopped\n",
			lines:     append(initialising, "booting", "starting bhyve (run 1)"),
			state:     "Running (4242)",
			wantLists: 1,
		},
	}
	for tname, tt := range tests {
		t.Run(tname, func(t *testing.T) {
			var d *Driver
			g := &guestRun{}
			d, fake := newDriver(t, g.handler(t, &d, name, tt.stamp, tt.lines, tt.state))
			d.ListInterval = time.Hour // only log lines may trigger a vm list
			require.NoError(t, os.MkdirAll(filepath.Join(d.VMDir, name), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(d.VMDir, name, "vm-bhyve.log"), []byte(tt.earlier), 0o644))

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			vm, err := d.Boot(ctx, name)
			lists := strings.Count(strings.Join(fake.subcommands(), " "), "list")
			assert.Equal(t, tt.wantLists, lists, "vm list runs")
			if tt.message == "" {
				require.NoError(t, err)
				assert.Equal(t, StateRunning, vm.State)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.message)
			assert.Equal(t, tt.kind, failure.KindOf(err))
			var be *BootError
			require.True(t, errors.As(err, &be))
			assert.Equal(t, tt.early, be.Early)
			assert.Equal(t, tt.lines, be.Log, "this start's lines, stamps removed")
		})
	}
}

// Without a readable vm-bhyve.log, vm list every ListInterval still sees
// the guest come up.
func TestBootWithoutLogFallsBackToListInterval(t *testing.T) {
	var d *Driver
	g := &guestRun{}
	d, fake := newDriver(t, g.handler(t, &d, "ci-1", "", nil, "Running (1)"))
	d.ListInterval = 50 * time.Millisecond
	require.NoError(t, os.MkdirAll(filepath.Join(d.VMDir, "ci-1"), 0o755))
	vm, err := d.Boot(context.Background(), "ci-1")
	require.NoError(t, err)
	assert.Equal(t, StateRunning, vm.State)
	assert.Equal(t, []string{"start", "list"}, fake.subcommands())
}
