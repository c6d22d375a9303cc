package jobvm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

const vmName = "ci-runner-one-42-3"

func newManager(hv *fakeHypervisor, leases *fakeLeases, ssh *fakeSSH) *Manager {
	return &Manager{
		VMs:    hv,
		Leases: leases,
		SSH:    ssh,
		Owner:  Owner{HostID: "host1", Runner: "Runner One"},
		Holder: "123@456",
		Config: Config{
			Template: "tmpl", Snapshot: "base", NamePrefix: "ci-", Shell: "bash -l",
			BootTimeout: 300 * time.Millisecond,
		},
		Held:     &HeldSet{},
		Observer: &phases{},
	}
}

func goodLeases() *fakeLeases { return &fakeLeases{ip: netip.MustParseAddr("10.77.0.20")} }

func discard(string, ...any) {}

func TestCreateRunCloseInOrder(t *testing.T) {
	hv, ssh := newFakeHypervisor("tmpl"), &fakeSSH{}
	m := newManager(hv, goodLeases(), ssh)
	var log []string
	logf := func(f string, a ...any) { log = append(log, f) }

	vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, logf)
	require.NoError(t, err)

	assert.Equal(t, vmName, vm.Name)
	assert.Equal(t, netip.MustParseAddr("10.77.0.20"), vm.Address.IP)
	assert.Equal(t, "58:9c:fc:01:02:03", vm.MAC.String())
	assert.True(t, m.Held.Has(vmName), "a running job's VM is held")
	assert.Equal(t, []string{"tmpl"}, ssh.templates, "SSH verifies the host key of the template the VM was cloned from")

	calls := hv.Calls()
	require.Len(t, calls, 3)
	assert.Equal(t, "clone tmpl@base "+vmName, calls[0])
	assert.Equal(t, "start "+vmName, calls[2])
	// MAC and marker are written between clone and start, in one sysrc call.
	for _, kv := range []string{
		"network0_mac=58:9c:fc:01:02:03", "gitlab_runner_bhyve_owner=" + m.Owner.ID(),
		"gitlab_runner_bhyve_runner=runner-one", "gitlab_runner_bhyve_job=42", "gitlab_runner_bhyve_holder=123@456",
	} {
		assert.Contains(t, calls[1], kv)
	}

	var phasesSeen []Phase
	for _, tm := range vm.Timings {
		phasesSeen = append(phasesSeen, tm.Phase)
	}
	assert.Equal(t, []Phase{PhaseClone, PhaseBoot, PhaseAddress, PhaseSSH}, phasesSeen)

	var out strings.Builder
	require.NoError(t, vm.Run(context.Background(), strings.NewReader("echo hi"), &out, &out))
	assert.Equal(t, []string{"bash -l: echo hi"}, ssh.conn.scripts)
	assert.Equal(t, "ran 7 bytes\n", out.String())

	require.NoError(t, vm.Close(context.Background()))
	require.NoError(t, vm.Close(context.Background()), "Close is idempotent")
	assert.Equal(t, []string{"stop " + vmName, "destroy " + vmName}, hv.Calls()[3:])
	assert.Equal(t, 1, ssh.conn.closed)
	assert.False(t, hv.Has(vmName))
	assert.False(t, m.Held.Has(vmName))
	assert.Error(t, vm.Run(context.Background(), strings.NewReader("x"), &out, &out), "no stages after Close")

	assert.Equal(t, []string{
		"start clone", "done clone ok", "start boot", "done boot ok", "start address", "done address ok",
		"start ssh", "done ssh ok", "start destroy", "done destroy ok",
	}, m.Observer.(*phases).seen)
}

func TestCreateFailuresNeverLeaveAVM(t *testing.T) {
	boom := errors.New("boom")
	tests := map[string]struct {
		setup     func(*fakeHypervisor, *fakeLeases, *fakeSSH)
		kind      failure.Kind
		message   string
		destroyed bool // a clone existed and must have been destroyed
	}{
		"clone fails": {
			setup:   func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) { h.failClone = boom },
			kind:    failure.System,
			message: "clone: boom",
		},
		"template snapshot missing is a configuration error": {
			setup: func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) {
				h.failClone = failure.Configf("snapshot zroot/vm/tmpl@base doesn't seem to exist")
			},
			kind:    failure.Config,
			message: "doesn't seem to exist",
		},
		"writing MAC and marker fails": {
			setup:     func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) { h.failSetConf = boom },
			kind:      failure.System,
			message:   "write MAC and ownership marker",
			destroyed: true,
		},
		"vm start reports a failure": {
			setup:     func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) { h.failStart = boom },
			kind:      failure.System,
			message:   "VM did not start: boot: boom",
			destroyed: true,
		},
		"guest dies while booting": {
			setup: func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) {
				h.boot = []vmbhyve.State{vmbhyve.StateLocked, vmbhyve.StateBootloader, vmbhyve.StateStopped}
				h.failBoot = &vmbhyve.BootError{Name: "x", Log: []string{"booting", "fatal; loader returned error 1", "stopped"}}
			},
			kind:      failure.System,
			message:   "x stopped while booting: fatal; loader returned error 1",
			destroyed: true,
		},
		"vm-bhyve gives up before booting": {
			setup: func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) {
				h.boot = []vmbhyve.State{vmbhyve.StateStopped}
				h.failBoot = &failure.PermanentError{Err: &vmbhyve.BootError{Name: "x", Early: true,
					Log: []string{"initialising", "fatal; unable to locate firmware /usr/local/share/uefi-firmware/BHYVE_UEFI_CODE-devel.fd"}}}
			},
			kind:      failure.Permanent,
			message:   "vm-bhyve gave up starting x before booting it: fatal; unable to locate firmware",
			destroyed: true,
		},
		"never reaches Running": {
			setup:     func(h *fakeHypervisor, _ *fakeLeases, _ *fakeSSH) { h.boot = []vmbhyve.State{vmbhyve.StateLocked} },
			kind:      failure.System,
			message:   "VM did not start within boot_timeout 300ms",
			destroyed: true,
		},
		"no DHCP answer": {
			setup:     func(_ *fakeHypervisor, l *fakeLeases, _ *fakeSSH) { l.never = true },
			kind:      failure.System,
			message:   "VM did not get a DHCP lease within boot_timeout 300ms",
			destroyed: true,
		},
		"SSH never accepts": {
			setup:     func(_ *fakeHypervisor, _ *fakeLeases, s *fakeSSH) { s.err = boom },
			kind:      failure.System,
			message:   "VM did not accept SSH: ssh: boom",
			destroyed: true,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			hv, leases, ssh := newFakeHypervisor("tmpl"), goodLeases(), &fakeSSH{}
			tt.setup(hv, leases, ssh)
			m := newManager(hv, leases, ssh)

			vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, discard)
			require.Error(t, err)
			assert.Nil(t, vm)
			assert.Contains(t, err.Error(), tt.message)
			assert.Equal(t, tt.kind, failure.KindOf(err), err.Error())
			assert.False(t, hv.Has(vmName), "no VM may be left behind")
			assert.False(t, m.Held.Has(vmName))
			calls := hv.Calls()
			if tt.destroyed {
				assert.Equal(t, "destroy "+vmName, calls[len(calls)-1])
			} else {
				assert.NotContains(t, strings.Join(calls, "\n"), "destroy")
			}
		})
	}
}

func TestCreateCancelledMidBootStillDestroys(t *testing.T) {
	hv, leases := newFakeHypervisor("tmpl"), &fakeLeases{never: true}
	m := newManager(hv, leases, &fakeSSH{})
	m.Config.BootTimeout = time.Minute

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			leases.mu.Lock()
			asked := len(leases.asked)
			leases.mu.Unlock()
			if asked > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := m.Create(ctx, Job{ID: 42, Slot: 3}, discard)
	require.ErrorIs(t, err, context.Canceled)
	assert.NotContains(t, err.Error(), "boot_timeout", "a cancelled job is not a boot timeout")
	assert.False(t, hv.Has(vmName), "destroying does not depend on the cancelled context")
}

func TestCreateReportsAFailedDestroyToo(t *testing.T) {
	hv := newFakeHypervisor("tmpl")
	hv.failStart, hv.failDestroy = errors.New("start failed"), errors.New("dataset busy")
	m := newManager(hv, goodLeases(), &fakeSSH{})

	_, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "start failed")
	assert.Contains(t, err.Error(), "destroying "+vmName+" failed too")
	assert.Contains(t, err.Error(), "dataset busy")
}

func TestLeftoverVMs(t *testing.T) {
	t.Run("left by an earlier attempt at the same job: replaced", func(t *testing.T) {
		hv := newFakeHypervisor("tmpl")
		m := newManager(hv, goodLeases(), &fakeSSH{})
		hv.vms[vmName] = &fakeVM{conf: map[string]string{keyOwner: m.Owner.ID(), keyJob: "42"}, state: vmbhyve.StateRunning}

		_, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, discard)
		require.NoError(t, err)
		assert.Equal(t, []string{"stop " + vmName, "destroy " + vmName, "clone tmpl@base " + vmName}, hv.Calls()[:3])
	})
	for name, conf := range map[string]map[string]string{
		"no marker":                    {"loader": "bhyveload"},
		"another runner's marker":      {keyOwner: "0123456789abcdef", keyJob: "42"},
		"our marker for a another job": {keyOwner: Owner{HostID: "host1", Runner: "Runner One"}.ID(), keyJob: "41"},
	} {
		t.Run(name+": untouched", func(t *testing.T) {
			hv := newFakeHypervisor("tmpl")
			m := newManager(hv, goodLeases(), &fakeSSH{})
			hv.vms[vmName] = &fakeVM{conf: conf, state: vmbhyve.StateRunning}

			_, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "was not created by this runner for job 42")
			assert.Empty(t, hv.Calls(), "nothing is run against a VM that is not ours")
			assert.True(t, hv.Has(vmName))
		})
	}
}

func TestDestroyByNameOnlyTouchesOurVMs(t *testing.T) {
	hv := newFakeHypervisor("tmpl")
	m := newManager(hv, goodLeases(), &fakeSSH{})
	hv.vms["ci-mine"] = &fakeVM{conf: map[string]string{keyOwner: m.Owner.ID()}, state: vmbhyve.StateRunning}
	hv.vms["ci-theirs"] = &fakeVM{conf: map[string]string{}, state: vmbhyve.StateRunning}

	require.NoError(t, m.Destroy(context.Background(), "ci-mine"))
	assert.False(t, hv.Has("ci-mine"))

	err := m.Destroy(context.Background(), "ci-theirs")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no ownership marker of this runner")
	assert.True(t, hv.Has("ci-theirs"))

	require.NoError(t, m.Destroy(context.Background(), "ci-gone"), "an absent VM is already destroyed")
}

func TestSweep(t *testing.T) {
	self, err := CurrentHolder(os.Getpid())
	require.NoError(t, err)
	dead := Holder("999999999@1")

	hv := newFakeHypervisor("ci-template-lookalike", "tmpl")
	m := newManager(hv, goodLeases(), &fakeSSH{})
	m.Config.Template = "ci-template-lookalike"
	ours := m.Owner.ID()
	add := func(name string, conf map[string]string) {
		hv.vms[name] = &fakeVM{conf: conf, state: vmbhyve.StateRunning}
	}
	add("ci-orphan-1-0", map[string]string{keyOwner: ours, keyJob: "1", keyHolder: string(dead)})
	add("ci-alive-2-0", map[string]string{keyOwner: ours, keyJob: "2", keyHolder: string(self)})
	add("ci-held-3-0", map[string]string{keyOwner: ours, keyJob: "3", keyHolder: string(dead)})
	add("ci-other-runner-4-0", map[string]string{keyOwner: "ffffffffffffffff", keyHolder: string(dead)})
	add("ci-unmarked", map[string]string{"loader": "uefi"})
	add("web-server", map[string]string{keyOwner: ours, keyHolder: string(dead)})
	m.Held.Add("ci-held-3-0")

	verdicts := func(found []Found) map[string]Verdict {
		out := map[string]Verdict{}
		for _, f := range found {
			out[f.Name] = f.Verdict
			assert.NoError(t, f.Err)
		}
		return out
	}
	want := map[string]Verdict{
		"ci-orphan-1-0":       Orphan,
		"ci-alive-2-0":        InUse,
		"ci-held-3-0":         InUse,
		"ci-other-runner-4-0": Foreign,
		"ci-unmarked":         Foreign,
	}

	found, err := m.Sweep(context.Background(), true)
	require.NoError(t, err)
	assert.Equal(t, want, verdicts(found), "the template and VMs without our prefix are not even considered")
	assert.True(t, hv.Has("ci-orphan-1-0"), "a dry run destroys nothing")

	found, err = m.Sweep(context.Background(), false)
	require.NoError(t, err)
	assert.Equal(t, want, verdicts(found))
	for name := range want {
		assert.Equal(t, name != "ci-orphan-1-0", hv.Has(name), name)
	}
	assert.True(t, hv.Has("web-server"))
	assert.True(t, hv.Has("ci-template-lookalike"))
}

// An operator's sweep that cannot see other users' processes must not take
// the service's live jobs for orphans: it leaves them alone and says why.
func TestSweepLeavesVMsWhoseHolderItCannotSee(t *testing.T) {
	restore := seesAllProcesses
	seesAllProcesses = func() (bool, string) { return false, "security.bsd.see_other_uids=0 hides other users' processes" }
	t.Cleanup(func() { seesAllProcesses = restore })

	hv := newFakeHypervisor("tmpl")
	m := newManager(hv, goodLeases(), &fakeSSH{})
	hv.vms["ci-job-1-0"] = &fakeVM{conf: map[string]string{keyOwner: m.Owner.ID(), keyJob: "1", keyHolder: "999999999@1"}, state: vmbhyve.StateRunning}

	found, err := m.Sweep(context.Background(), false)
	require.NoError(t, err)
	require.Len(t, found, 1)
	assert.Equal(t, HolderUnknown, found[0].Verdict)
	assert.ErrorContains(t, found[0].Err, "see_other_uids=0")
	assert.False(t, found[0].Removable())
	assert.True(t, hv.Has("ci-job-1-0"), "a forced sweep leaves it")
}

func TestSweepInProcessHolder(t *testing.T) {
	// The native executor is its own holder: a VM it recorded but no longer
	// holds (a job that let go without destroying) is an orphan even though
	// the holder process is alive.
	self, err := CurrentHolder(os.Getpid())
	require.NoError(t, err)
	hv := newFakeHypervisor("tmpl")
	m := newManager(hv, goodLeases(), &fakeSSH{})
	m.Holder, m.HolderIsSelf = self, true
	hv.vms["ci-dropped-1-0"] = &fakeVM{conf: map[string]string{keyOwner: m.Owner.ID(), keyHolder: string(self)}}
	hv.vms["ci-running-2-0"] = &fakeVM{conf: map[string]string{keyOwner: m.Owner.ID(), keyHolder: string(self)}}
	m.Held.Add("ci-running-2-0")

	_, err = m.Sweep(context.Background(), false)
	require.NoError(t, err)
	assert.False(t, hv.Has("ci-dropped-1-0"))
	assert.True(t, hv.Has("ci-running-2-0"))
}

func TestJobVMName(t *testing.T) {
	tests := map[string]struct {
		runner string
		want   string
	}{
		"plain":                {"bhyve", "ci-bhyve-7-0"},
		"spaces and case":      {"My Runner #2", "ci-my-runner-2-7-0"},
		"dots are not allowed": {"host.example.org", "ci-host-example-org-7-0"},
		"nothing usable":       {"***", "ci-runner-7-0"},
		"long names truncated": {strings.Repeat("a", 60), "ci-" + strings.Repeat("a", 24) + "-7-0"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := JobVMName("ci-", tt.runner, 7, 0)
			assert.Equal(t, tt.want, got)
			assert.NoError(t, vmbhyve.ValidName(got))
		})
	}
}

func TestHolder(t *testing.T) {
	self, err := CurrentHolder(os.Getpid())
	require.NoError(t, err)
	alive, err := self.Alive()
	require.NoError(t, err)
	assert.True(t, alive)

	pid, _, _ := strings.Cut(string(self), "@")
	for name, tc := range map[string]struct {
		h       Holder
		hidden  bool // other users' processes are hidden from this one
		wantErr string
	}{
		"reused PID (other start time)": {h: Holder(pid + "@1")},
		"no such process":               {h: "999999999@1"},
		// A live holder of another user looks like a missing one: never
		// call that dead.
		"no such process, others hidden": {h: "999999999@1", hidden: true, wantErr: "not visible, but hidden for the test"},
		"garbage":                        {h: "nonsense", wantErr: "is not PID@START"},
		"empty":                          {h: "", wantErr: "is not PID@START"},
		"no start":                       {h: Holder(pid + "@"), wantErr: "is not PID@START"},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.hidden {
				restore := seesAllProcesses
				seesAllProcesses = func() (bool, string) { return false, "hidden for the test" }
				t.Cleanup(func() { seesAllProcesses = restore })
			}
			alive, err := tc.h.Alive()
			assert.False(t, alive)
			if tc.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tc.wantErr)
			}
		})
	}

	start, err := processStartFromStat("4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 98 0 0 0 0 0 0 0 20 0 1 0 777123 1000 10")
	require.NoError(t, err)
	assert.Equal(t, "777123", start)
	_, err = processStartFromStat("garbage")
	assert.Error(t, err)
}

func TestDetachThenAttachFromAnotherProcess(t *testing.T) {
	hv, ssh := newFakeHypervisor("tmpl"), &fakeSSH{}
	m := newManager(hv, goodLeases(), ssh)
	vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, discard)
	require.NoError(t, err)
	first := ssh.conn

	require.NoError(t, vm.Detach())
	assert.Equal(t, 1, first.closed)
	require.NoError(t, vm.Close(context.Background()), "Close after Detach leaves the VM alone")
	assert.True(t, hv.Has(vmName))

	// A later stage, in a new process, with a new Manager.
	later := newManager(hv, goodLeases(), ssh)
	again, err := later.Attach(context.Background(), vmName, vm.Address.IP)
	require.NoError(t, err)
	assert.Equal(t, vm.MAC, again.MAC)
	assert.NotSame(t, first, ssh.conn, "a new connection")
	require.NoError(t, again.Close(context.Background()))
	assert.False(t, hv.Has(vmName))

	hv.vms["ci-foreign"] = &fakeVM{conf: map[string]string{}}
	_, err = later.Attach(context.Background(), "ci-foreign", vm.Address.IP)
	assert.ErrorContains(t, err, "no ownership marker")
}

func TestSelfHoldingHostsShareWhatTheyHold(t *testing.T) {
	// Two Hosts of one process (say, two front-ends in one binary): a sweep
	// through one must not take the other's running VM for an orphan.
	a, err := NewHost(os.Getpid(), true)
	require.NoError(t, err)
	b, err := NewHost(os.Getpid(), true)
	require.NoError(t, err)
	a.Held.Add("ci-a-1-0")
	t.Cleanup(func() { a.Held.Remove("ci-a-1-0") })
	assert.True(t, b.Held.Has("ci-a-1-0"))

	parent, err := NewHost(os.Getppid(), false)
	require.NoError(t, err)
	assert.False(t, parent.Held.Has("ci-a-1-0"), "a Host holding for another process has its own set")
}

// A cancel while `vm clone` runs must not cut the clone short (that leaves
// datasets without a conf, which vm-bhyve cannot see or destroy): the clone
// finishes, then the finished VM is destroyed.
func TestCreateCancelledMidCloneFinishesTheCloneThenDestroysIt(t *testing.T) {
	hv := newFakeHypervisor("tmpl")
	hv.cloneGate, hv.cloning = make(chan struct{}), make(chan struct{})
	m := newManager(hv, goodLeases(), &fakeSSH{})

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-hv.cloning
		cancel()
		time.Sleep(50 * time.Millisecond) // a cancelled clone would stop now
		close(hv.cloneGate)
	}()
	_, err := m.Create(ctx, Job{ID: 42, Slot: 3}, discard)
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "cancelled while cloning")
	parts, _ := hv.PartialClones("ci-")
	assert.Empty(t, parts, "no partial clone left")
	assert.False(t, hv.Has(vmName), "the finished clone is destroyed")
	assert.Equal(t, []string{"clone tmpl@base " + vmName, "stop " + vmName, "destroy " + vmName}, hv.Calls())
	assert.False(t, m.Held.Has(vmName))
}

func TestCreateRemovesAPartialCloneOfTheSameJob(t *testing.T) {
	tests := map[string]struct {
		setup func(h *fakeHypervisor)
		calls []string // the first calls of Create
		fails string
	}{
		"left by an earlier attempt": {
			setup: func(h *fakeHypervisor) { h.partial[vmName] = time.Now() },
			calls: []string{"destroy-partial " + vmName, "clone tmpl@base " + vmName},
		},
		"left by this attempt's failed clone": {
			setup: func(h *fakeHypervisor) {
				h.failClone = errors.New("Unable to rename configuration file to " + vmName + ".conf")
				h.cloneLeavesPartial = true
			},
			calls: []string{"clone tmpl@base " + vmName, "destroy-partial " + vmName},
			fails: "Unable to rename configuration file",
		},
		"name taken by a VM that is not ours": {
			setup: func(h *fakeHypervisor) {
				h.failClone = fmt.Errorf("new guest already exists: %w", vmbhyve.ErrExists)
				h.partial[vmName] = time.Now() // cannot happen with vm-bhyve; proves the check
			},
			calls: []string{"destroy-partial " + vmName, "clone tmpl@base " + vmName},
			fails: "already exists",
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			hv := newFakeHypervisor("tmpl")
			tt.setup(hv)
			m := newManager(hv, goodLeases(), &fakeSSH{})
			vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, discard)
			calls := hv.Calls()
			if tt.fails != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.fails)
				assert.Equal(t, tt.calls, calls)
			} else {
				require.NoError(t, err)
				require.NoError(t, vm.Close(context.Background()))
				assert.Equal(t, tt.calls, calls[:len(tt.calls)])
			}
			parts, _ := hv.PartialClones("ci-")
			assert.Empty(t, parts)
		})
	}
}

func TestSweepRemovesOnlyOldUnheldPartialClonesWithOurPrefix(t *testing.T) {
	hv := newFakeHypervisor("tmpl")
	m := newManager(hv, goodLeases(), &fakeSSH{})
	now := time.Now()
	m.Now = func() time.Time { return now }
	hv.partial["ci-crashed-1-0"] = now.Add(-time.Hour)
	hv.partial["ci-cloning-2-0"] = now.Add(-time.Second) // another process may be cloning
	hv.partial["ci-held-3-0"] = now.Add(-time.Hour)
	hv.partial["web-1"] = now.Add(-time.Hour)
	m.Held.Add("ci-held-3-0")

	for _, dry := range []bool{true, false} {
		found, err := m.Sweep(context.Background(), dry)
		require.NoError(t, err)
		got := map[string]Verdict{}
		for _, f := range found {
			got[f.Name] = f.Verdict
			assert.NoError(t, f.Err)
		}
		assert.Equal(t, map[string]Verdict{"ci-crashed-1-0": Partial, "ci-cloning-2-0": InUse, "ci-held-3-0": InUse}, got, "dry run %v", dry)
		_, left := hv.partial["ci-crashed-1-0"]
		assert.Equal(t, dry, left, "only a forced sweep destroys")
	}
	for _, name := range []string{"ci-cloning-2-0", "ci-held-3-0", "web-1"} {
		assert.Contains(t, hv.partial, name)
	}
}

func TestPowerOffEndsTheGuestAndCloseDestroysIt(t *testing.T) {
	hv, ssh := newFakeHypervisor("tmpl"), &fakeSSH{}
	m := newManager(hv, goodLeases(), ssh)
	vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, t.Logf)
	require.NoError(t, err)

	require.NoError(t, vm.PowerOff(context.Background()))
	assert.Equal(t, []string{"stop " + vmName}, hv.Calls()[3:], "powered off at once, no ACPI grace")
	assert.True(t, hv.Has(vmName), "PowerOff leaves the destroy to Close")
	assert.True(t, m.Held.Has(vmName), "still ours until destroyed")
	assert.Equal(t, 1, ssh.conn.closed)
	assert.Error(t, vm.Ping(context.Background()), "no stages after PowerOff")

	require.NoError(t, vm.Close(context.Background()))
	assert.Equal(t, []string{"stop " + vmName, "stop " + vmName, "destroy " + vmName}, hv.Calls()[3:])
	assert.Equal(t, 1, ssh.conn.closed, "the connection is closed once")
	assert.False(t, hv.Has(vmName))
	assert.False(t, m.Held.Has(vmName))
}

func TestAFailedDestroyKeepsTheVMHeldUntilARetrySucceeds(t *testing.T) {
	hv, ssh := newFakeHypervisor("tmpl"), &fakeSSH{}
	m := newManager(hv, goodLeases(), ssh)
	vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, t.Logf)
	require.NoError(t, err)

	hv.mu.Lock()
	hv.failDestroy = errors.New("failed to destroy ZFS dataset")
	hv.mu.Unlock()
	require.Error(t, vm.Close(context.Background()))
	assert.True(t, hv.Has(vmName))
	assert.True(t, m.Held.Has(vmName), "whoever retries owns it; a sweep must not race the retry")

	hv.mu.Lock()
	hv.failDestroy = nil
	hv.mu.Unlock()
	require.NoError(t, vm.Close(context.Background()), "Close retries a destroy that failed")
	assert.False(t, hv.Has(vmName))
	assert.False(t, m.Held.Has(vmName))
	require.NoError(t, vm.Close(context.Background()))
	assert.Equal(t, 2, strings.Count(strings.Join(hv.Calls(), "\n"), "destroy "+vmName), "nothing after success")
}
