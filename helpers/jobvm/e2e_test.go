//go:build linux

package jobvm_test

// End-to-end tests of the job VM lifecycle on the simulated FreeBSD host:
// the fake vm command, guests in network namespaces, real Kea DHCP and real
// OpenSSH. They need root (CI runs as root) and fail loudly without it.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

type e2e struct {
	sim  *fixture.Host
	s    *settings.Settings
	host *jobvm.Host
}

func newE2E(t *testing.T, extra ...string) *e2e {
	t.Helper()
	h := fixture.New(t, sim.Options{}, extra...)
	s, err := settings.Load(h.SettingsPath, fixture.Runner)
	require.NoError(t, err)
	host, err := jobvm.NewHost(os.Getpid(), true)
	require.NoError(t, err)
	host.Dialer = h // connect from inside the simulated host's namespace
	return &e2e{sim: h, s: s, host: host}
}

func (e *e2e) manager() *jobvm.Manager { return e.host.Manager(e.s, "", "") }

// gone asserts that nothing of the VM is left: not in `vm list`, no guest
// processes or namespace.
func (e *e2e) gone(t *testing.T, name string) {
	t.Helper()
	_, exists, err := e.host.Driver(e.s).Get(context.Background(), name)
	require.NoError(t, err)
	assert.False(t, exists, "%s is still in vm list", name)
	for _, p := range e.sim.Resources().Processes {
		assert.NotContains(t, p.Cmdline, name, "process of %s left behind", name)
	}
	for _, ns := range e.sim.Resources().NetNS {
		assert.NotContains(t, ns, name)
	}
}

func logTo(t *testing.T) jobvm.Logf {
	return func(format string, args ...any) { t.Logf(format, args...) }
}

func TestE2EStagesRunInOrderStreamAndPropagateExitCodes(t *testing.T) {
	e := newE2E(t)
	vm, err := e.manager().Create(context.Background(), jobvm.Job{ID: 101, Slot: 0}, logTo(t))
	require.NoError(t, err)
	t.Logf("phases: %+v", vm.Timings)

	var log strings.Builder
	stages := []string{"prepare_script", "get_sources", "restore_cache", "step_script", "after_script", "archive_cache", "cleanup_file_variables"}
	for _, stage := range stages {
		script := fmt.Sprintf("echo %s on $(hostname) as $(id -un)\necho %s >> /builds/stages\n", stage, stage)
		require.NoError(t, vm.Run(context.Background(), strings.NewReader(script), &log, &log), stage)
	}
	var order strings.Builder
	require.NoError(t, vm.Run(context.Background(), strings.NewReader("cat /builds/stages"), &order, io.Discard))
	assert.Equal(t, strings.Join(stages, "\n")+"\n", order.String(), "stages ran in order, in one guest")
	assert.Contains(t, log.String(), "step_script on "+vm.Name+" as "+e.sim.SSHUser())

	// Streaming: the first line arrives while the stage is still running.
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(context.Background(), strings.NewReader("echo first\nsleep 3\necho second\n"), w, io.Discard)
		w.Close()
	}()
	first, err := bufio.NewReader(r).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "first\n", first)
	select {
	case err := <-done:
		t.Fatalf("the stage had already ended (%v) when its first line arrived: output is buffered", err)
	default:
	}
	go io.Copy(io.Discard, r)
	require.NoError(t, <-done)

	// A script's exit code propagates as a script failure.
	err = vm.Run(context.Background(), strings.NewReader("echo failing >&2\nexit 42\n"), io.Discard, io.Discard)
	require.Error(t, err)
	assert.Equal(t, failure.Script, failure.KindOf(err))
	assert.Equal(t, 42, failure.ExitCode(err))

	require.NoError(t, vm.Close(context.Background()))
	e.gone(t, vm.Name)
}

func TestE2ECancelMidStageKillsTheRemoteProcessAndDestroysTheVM(t *testing.T) {
	e := newE2E(t)
	vm, err := e.manager().Create(context.Background(), jobvm.Job{ID: 102, Slot: 1}, logTo(t))
	require.NoError(t, err)

	// A marker only the job's process carries, to find it from outside.
	marker := fmt.Sprintf("sleep %d", 1000+os.Getpid()%1000)
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- vm.Run(ctx, strings.NewReader("echo started\nexec "+marker+"\n"), w, io.Discard)
		w.Close()
	}()
	line, err := bufio.NewReader(r).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "started\n", line)
	go io.Copy(io.Discard, r)
	require.Eventually(t, func() bool { return pgrep(marker) }, 10*time.Second, 20*time.Millisecond)

	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(e.s.KillGrace + 10*time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assert.Eventually(t, func() bool { return !pgrep(marker) }, 10*time.Second, 20*time.Millisecond, "the job's process was killed in the guest")

	require.NoError(t, vm.Close(context.Background()))
	e.gone(t, vm.Name)
}

func pgrep(pattern string) bool {
	return exec.Command("pgrep", "-f", "^"+pattern+"$").Run() == nil
}

func TestE2EBootFailuresAreSystemFailuresWithinBootTimeout(t *testing.T) {
	tests := map[string]struct {
		fault   sim.Fault
		message string
	}{
		"no DHCP answer":     {fault: sim.Fault{NoDHCP: true}, message: "VM did not get a DHCP lease within boot_timeout 4s"},
		"sshd never starts":  {fault: sim.Fault{NoSSHD: true}, message: "VM did not accept SSH within boot_timeout 4s"},
		"vm start refuses":   {fault: sim.Fault{Fail: "start"}, message: "VM did not start"},
		"guest stuck booted": {fault: sim.Fault{BootDelay: time.Hour}, message: "within boot_timeout 4s"},
	}
	e := newE2E(t, `boot_timeout = "4s"`)
	job := int64(200)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			job++
			require.NoError(t, e.sim.SetFault(e.sim.Template(), tt.fault))
			t.Cleanup(func() { _ = e.sim.SetFault(e.sim.Template(), sim.Fault{}) })

			start := time.Now()
			vm, err := e.manager().Create(context.Background(), jobvm.Job{ID: job}, logTo(t))
			took := time.Since(start)
			require.Error(t, err)
			assert.Nil(t, vm)
			t.Logf("error after %s: %v", took.Round(time.Millisecond), err)
			assert.Contains(t, err.Error(), tt.message)
			assert.Equal(t, failure.System, failure.KindOf(err))
			assert.Less(t, took, 4*time.Second+e.s.StopTimeout+15*time.Second, "bounded by boot_timeout plus teardown")
			e.gone(t, jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, job, 0))
		})
	}
}

func TestE2EWrongHostKeyFailsFastWithoutRetrying(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)

	e := newE2E(t, `ssh.known_hosts_file = ""`,
		fmt.Sprintf("ssh.host_key = %q", strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other)))))

	start := time.Now()
	_, err = e.manager().Create(context.Background(), jobvm.Job{ID: 300}, logTo(t))
	took := time.Since(start)
	require.Error(t, err)
	t.Logf("error after %s: %v", took.Round(time.Millisecond), err)
	var hk *guestssh.HostKeyError
	require.ErrorAs(t, err, &hk)
	assert.Equal(t, failure.Config, failure.KindOf(err), "retrying cannot fix a wrong pin")
	assert.Less(t, took, 30*time.Second, "no retries until boot_timeout (60s)")
	e.gone(t, jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 300, 0))
}

func TestE2EForeignVMsAreNeverTouched(t *testing.T) {
	e := newE2E(t)
	d := e.host.Driver(e.s)
	ctx := context.Background()
	// An operator's own VMs, one with exactly the name a job would use and
	// one that merely shares the prefix, both running.
	taken := jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 400, 0)
	for _, name := range []string{taken, e.s.NamePrefix + "operator"} {
		require.NoError(t, d.Clone(ctx, e.sim.Template(), e.sim.Snapshot(), name))
		require.NoError(t, d.Start(ctx, name))
		_, err := d.WaitState(ctx, name, vmbhyve.InState(vmbhyve.StateRunning))
		require.NoError(t, err)
	}

	m := e.manager()
	_, err := m.Create(ctx, jobvm.Job{ID: 400}, logTo(t))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "was not created by this runner")

	require.Error(t, m.Destroy(ctx, taken))
	found, err := m.Sweep(ctx, false)
	require.NoError(t, err)
	for _, f := range found {
		assert.Equal(t, jobvm.Foreign, f.Verdict, f.Name)
	}
	for _, name := range []string{taken, e.s.NamePrefix + "operator"} {
		vm, exists, err := d.Get(ctx, name)
		require.NoError(t, err)
		assert.True(t, exists)
		assert.Equal(t, vmbhyve.StateRunning, vm.State, "%s was left running", name)
	}
}

func TestE2EFourConcurrentJobs(t *testing.T) {
	e := newE2E(t)
	m := e.manager()
	var wg sync.WaitGroup
	addrs := make([]string, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			vm, err := m.Create(context.Background(), jobvm.Job{ID: int64(500 + i), Slot: i}, logTo(t))
			if err != nil {
				errs[i] = err
				return
			}
			defer func() { errs[i] = errors.Join(errs[i], vm.Close(context.Background())) }()
			var out strings.Builder
			script := fmt.Sprintf("echo job-%d > /builds/mine; sleep 1; cat /builds/mine; hostname", i)
			if err := vm.Run(context.Background(), strings.NewReader(script), &out, &out); err != nil {
				errs[i] = err
				return
			}
			addrs[i] = vm.Address.IP.String()
			if want := fmt.Sprintf("job-%d\n%s\n", i, vm.Name); out.String() != want {
				errs[i] = fmt.Errorf("job %d saw %q, want %q: guests share files", i, out.String(), want)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "job %d", i)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		assert.False(t, seen[a], "address %s given twice", a)
		seen[a] = true
	}
	for i := range 4 {
		e.gone(t, jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, int64(500+i), i))
	}
}

func TestE2ERunnerKilledMidJobThenSweptOnNextStart(t *testing.T) {
	e := newE2E(t)
	// The "runner" that holds the VM is a separate process we can kill.
	runner := exec.Command("sleep", "600")
	require.NoError(t, runner.Start())
	t.Cleanup(func() { _ = runner.Process.Kill(); _ = runner.Wait() })
	crashed, err := jobvm.NewHost(runner.Process.Pid, true)
	require.NoError(t, err)
	crashed.Dialer = e.sim

	vm, err := crashed.Manager(e.s, "", "").Create(context.Background(), jobvm.Job{ID: 600}, logTo(t))
	require.NoError(t, err)
	require.NoError(t, vm.Detach())

	// While the runner lives, its VM is in use.
	found, err := e.manager().Sweep(context.Background(), false)
	require.NoError(t, err)
	require.Len(t, found, 1)
	assert.Equal(t, jobvm.InUse, found[0].Verdict)

	require.NoError(t, runner.Process.Kill())
	_ = runner.Wait()

	found, err = e.manager().Sweep(context.Background(), false)
	require.NoError(t, err)
	require.Len(t, found, 1)
	assert.Equal(t, jobvm.Orphan, found[0].Verdict)
	assert.NoError(t, found[0].Err)
	e.gone(t, vm.Name)
}

// afterCleanup holds the executor's lease lookup back until Kea's lease file
// cleanup has moved the guest's lease out of the current file, so the test
// does not depend on who wins the race.
type afterCleanup struct {
	jobvm.Addresses
	leaseFile string
}

func (a afterCleanup) WaitAddress(ctx context.Context, mac net.HardwareAddr) (jobvm.Address, error) {
	for {
		rotated, _ := os.ReadFile(a.leaseFile + ".2")
		current, _ := os.ReadFile(a.leaseFile)
		if strings.Contains(string(rotated), mac.String()) && !strings.Contains(string(current), mac.String()) {
			return a.Addresses.WaitAddress(ctx, mac)
		}
		select {
		case <-ctx.Done():
			return jobvm.Address{}, fmt.Errorf("lease file cleanup never moved %s's lease to .2: %w", mac, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestE2ELeaseFileCleanupDuringBootStillFindsTheAddress(t *testing.T) {
	e := newE2E(t)
	require.NoError(t, e.sim.SetFault(e.sim.Template(), sim.Fault{LFCOnLease: true}))
	m := e.manager()
	m.Leases = afterCleanup{Addresses: m.Leases, leaseFile: e.sim.LeaseFile()}

	vm, err := m.Create(context.Background(), jobvm.Job{ID: 700}, logTo(t))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(vm.Address.Source, e.sim.LeaseFile()+".2 line "), vm.Address.Source)
	var out strings.Builder
	require.NoError(t, vm.Run(context.Background(), strings.NewReader("hostname"), &out, io.Discard))
	assert.Equal(t, vm.Name+"\n", out.String(), "the address found after cleanup is the guest's")
	require.NoError(t, vm.Close(context.Background()))
}

// staleRows appends, just before the guest boots, rows that say the VM's MAC
// once had another address which has since been given to someone else.
type staleRows struct {
	t     *testing.T
	e     *e2e
	added string
}

func (s *staleRows) PhaseStarted(vm string, p jobvm.Phase) {
	if p != jobvm.PhaseBoot {
		return
	}
	conf, err := s.e.host.Driver(s.e.s).ReadConf(vm)
	require.NoError(s.t, err)
	mac := conf["network0_mac"]
	now := time.Now().Unix()
	stale := "10.77.0.250"
	rows := fmt.Sprintf("%s,%s,,3600,%d,1,0,0,old-vm,0,\n%s,58:9c:fc:0f:ff:fe,,3600,%d,1,0,0,new-owner,0,\n",
		stale, mac, now+3000, stale, now+3500)
	f, err := os.OpenFile(s.e.sim.LeaseFile(), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(s.t, err)
	_, err = f.WriteString(rows)
	require.NoError(s.t, err)
	require.NoError(s.t, f.Close())
	s.added = stale
}

func (s *staleRows) PhaseDone(string, jobvm.Phase, time.Duration, error) {}

func TestE2EStaleRowsForAReusedAddressGiveTheRightAddress(t *testing.T) {
	e := newE2E(t)
	m := e.manager()
	obs := &staleRows{t: t, e: e}
	m.Observer = obs
	vm, err := m.Create(context.Background(), jobvm.Job{ID: 800}, logTo(t))
	require.NoError(t, err)
	require.Equal(t, "10.77.0.250", obs.added)

	mac, err := e.sim.GuestMAC(vm.Name)
	require.NoError(t, err)
	real, ok, err := e.sim.Lease(mac)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, real, vm.Address.IP, "the address Kea gave, not the stale one")
	assert.NotEqual(t, "10.77.0.250", vm.Address.IP.String())

	// And the address is the guest's: SSH reached it.
	var out strings.Builder
	require.NoError(t, vm.Run(context.Background(), strings.NewReader("hostname"), &out, io.Discard))
	assert.Equal(t, vm.Name+"\n", out.String())
	require.NoError(t, vm.Close(context.Background()))
}

// lockedLog collects job log lines from any goroutine.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// vm-bhyve's `vm _run` gives up on a uefi-custom guest whose firmware
// (vm_dir/.config/BHYVE_UEFI.fd) is missing before it writes run.lock, so
// the guest never leaves Stopped. That must fail in seconds, not after
// boot_timeout, with vm-bhyve's reason, and as a failure not worth retrying.
func TestE2EVMBhyveGivingUpBeforeBootFailsAtOnceWithItsReason(t *testing.T) {
	e := newE2E(t)
	require.NoError(t, e.sim.AddTemplate("nofirmware", e.sim.Snapshot(), sim.WithGuestConfig("uefi-custom", "", "")))
	var log lockedLog
	name := jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 500, 0)

	start := time.Now()
	vm, err := e.host.Manager(e.s, "nofirmware", "").Create(context.Background(), jobvm.Job{ID: 500}, log.logf)
	took := time.Since(start)
	require.Error(t, err)
	assert.Nil(t, vm)
	t.Logf("error after %s: %v\njob log:\n%s", took.Round(time.Millisecond), err, log.String())
	assert.Contains(t, err.Error(), "fatal; unable to locate firmware "+e.sim.VMDir()+"/.config/BHYVE_UEFI.fd")
	assert.Equal(t, failure.Permanent, failure.KindOf(err), "the same start fails the same way every time")
	assert.Less(t, took, 10*time.Second, "boot_timeout is %s", e.s.BootTimeout)
	assert.Contains(t, log.String(), "[loader: uefi-custom]", "vm-bhyve.log reaches the job log before the VM (and its log) is destroyed")
	e.gone(t, name)
}

// A boot watches vm-bhyve.log without privilege and runs `vm list` (as root,
// a sudo log line each) only when the log says something changed, or every
// few seconds.
func TestE2EBootRunsFewPrivilegedCommands(t *testing.T) {
	e := newE2E(t)
	// A real bhyveload waits autoboot_delay (vm-bhyve's loader_timeout, 3 s
	// by default) in the Bootloader stage; the simulator's default is 150 ms.
	for _, delay := range []time.Duration{0, 3 * time.Second} {
		t.Run(fmt.Sprintf("loader stage %s", delay), func(t *testing.T) {
			require.NoError(t, e.sim.SetFault(e.sim.Template(), sim.Fault{LoaderDelay: delay}))
			t.Cleanup(func() { _ = e.sim.SetFault(e.sim.Template(), sim.Fault{}) })
			before, err := e.sim.VMInvocations()
			require.NoError(t, err)
			job := int64(600 + delay/time.Second)
			vm, err := e.manager().Create(context.Background(), jobvm.Job{ID: job}, logTo(t))
			require.NoError(t, err)
			after, err := e.sim.VMInvocations()
			require.NoError(t, err)
			require.NoError(t, vm.Close(context.Background()))

			counts := map[string]int{}
			for _, args := range after[len(before):] {
				counts[args[0]]++
			}
			t.Logf("vm commands during Create (loader stage %s): %v; timings %+v", delay, counts, vm.Timings)
			assert.Equal(t, 1, counts["clone"])
			assert.Equal(t, 1, counts["start"])
			assert.LessOrEqual(t, counts["list"], 3, "vm list runs")
		})
	}
}

// Partial clones on the simulated host: `vm clone` creates the datasets and
// only then renames the conf (zfs::clone), and in between vm-bhyve itself
// cannot see or destroy the clone.
func TestE2EPartialClonesAreNeverLeftBehind(t *testing.T) {
	e := newE2E(t)
	ctx := context.Background()
	e.host.Driver(e.s).ZFS = []string{e.sim.ZFSCommand()}
	m := e.manager()
	dataset := func(name string) bool { // "" is the datastore itself
		ds := strings.TrimSuffix(e.sim.Dataset()+"/"+name, "/")
		r, err := e.sim.Command(ctx, e.sim.ZFSCommand(), "list", "-H", "-o", "name,mountpoint", ds).CombinedOutput()
		t.Logf("zfs list %s: %s (%v)", name, strings.TrimSpace(string(r)), err)
		return err == nil
	}

	t.Run("cancel mid-clone", func(t *testing.T) {
		require.NoError(t, e.sim.SetFault(e.sim.Template(), sim.Fault{CloneDelay: 2 * time.Second}))
		t.Cleanup(func() { _ = e.sim.SetFault(e.sim.Template(), sim.Fault{}) })
		name := jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 700, 0)
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			// Cancel once the datasets exist and the conf does not.
			for !dataset(name) {
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
		}()
		_, err := m.Create(cctx, jobvm.Job{ID: 700}, logTo(t))
		require.ErrorIs(t, err, context.Canceled)
		assert.Contains(t, err.Error(), "cancelled while cloning")
		assert.False(t, dataset(name), "no dataset left")
		assert.NoDirExists(t, e.sim.VMDir()+"/"+name)
		e.gone(t, name)
	})

	t.Run("left by a failed clone, removed by the next attempt", func(t *testing.T) {
		name := jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 701, 0)
		require.NoError(t, e.sim.SetFault(e.sim.Template(), sim.Fault{Fail: sim.FailCloneRename, FailTimes: 1}))
		t.Cleanup(func() { _ = e.sim.SetFault(e.sim.Template(), sim.Fault{}) })
		r, err := e.sim.VM(ctx, "clone", e.sim.Template()+"@"+e.sim.Snapshot(), name)
		require.NoError(t, err)
		require.Equal(t, 1, r.ExitCode, r.String())
		require.True(t, dataset(name), "a partial clone: datasets without a conf")

		vm, err := m.Create(ctx, jobvm.Job{ID: 701}, logTo(t))
		require.NoError(t, err)
		require.NoError(t, vm.Close(ctx))
		e.gone(t, name)
		assert.False(t, dataset(name))
	})

	t.Run("sweep", func(t *testing.T) {
		abandoned := jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 702, 0)
		foreign := "operator-partial"
		for _, name := range []string{abandoned, foreign} {
			require.NoError(t, e.sim.SetFault(e.sim.Template(), sim.Fault{Fail: sim.FailCloneRename, FailTimes: 1}))
			r, err := e.sim.VM(ctx, "clone", e.sim.Template()+"@"+e.sim.Snapshot(), name)
			require.NoError(t, err)
			require.Equal(t, 1, r.ExitCode, r.String())
		}
		t.Cleanup(func() { _ = e.sim.SetFault(e.sim.Template(), sim.Fault{}) })
		// A directory with our prefix that is no dataset of its own: zfs
		// list answers with the datastore, which must never be destroyed.
		plain := e.s.NamePrefix + "plain-dir"
		require.NoError(t, os.Mkdir(e.sim.VMDir()+"/"+plain, 0o755))

		found, err := m.Sweep(ctx, false)
		require.NoError(t, err)
		for _, f := range found {
			assert.NotEqual(t, jobvm.Partial, f.Verdict, "%s is too young to be abandoned", f.Name)
		}

		m.Now = func() time.Time { return time.Now().Add(time.Hour) }
		found, err = m.Sweep(ctx, false)
		require.NoError(t, err)
		got := map[string]jobvm.Found{}
		for _, f := range found {
			got[f.Name] = f
		}
		require.Contains(t, got, abandoned)
		assert.Equal(t, jobvm.Partial, got[abandoned].Verdict)
		assert.NoError(t, got[abandoned].Err)
		assert.False(t, dataset(abandoned))
		assert.NoDirExists(t, e.sim.VMDir()+"/"+abandoned)

		assert.NotContains(t, got, foreign, "another prefix is not looked at")
		assert.True(t, dataset(foreign))
		require.Contains(t, got, plain)
		require.Error(t, got[plain].Err)
		assert.Contains(t, got[plain].Err.Error(), "is not a ZFS dataset of its own")
		assert.DirExists(t, e.sim.VMDir()+"/"+plain)
		assert.True(t, dataset(""), "the datastore is intact")
		_, exists, err := e.host.Driver(e.s).Get(ctx, e.sim.Template())
		require.NoError(t, err)
		assert.True(t, exists)
	})
}

// A job cancelled (or a pool boot abandoned at shutdown) while vm-bhyve is
// still starting the guest: `vm start` has returned, `_run` carries on in
// the background. Whatever stage the cancel meets (before run.lock, in the
// loader, booted), the VM must end destroyed with no `_run` or guest
// process left, well within the destroy budget.
func TestE2ECancelWhileVMBhyveIsStartingLeavesNothing(t *testing.T) {
	tests := map[string]struct {
		fault sim.Fault
		after time.Duration // cancel this long after "Starting"
	}{
		"before run.lock":   {fault: sim.Fault{LockDelay: 1500 * time.Millisecond}, after: 200 * time.Millisecond},
		"in the bootloader": {fault: sim.Fault{LoaderDelay: 5 * time.Second}, after: 700 * time.Millisecond},
		"booting":           {fault: sim.Fault{BootDelay: time.Hour}, after: 700 * time.Millisecond},
	}
	e := newE2E(t)
	job := int64(900)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			job++
			require.NoError(t, e.sim.SetFault(e.sim.Template(), tt.fault))
			t.Cleanup(func() { _ = e.sim.SetFault(e.sim.Template(), sim.Fault{}) })

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logf := func(format string, args ...any) {
				line := fmt.Sprintf(format, args...)
				t.Log(line)
				if strings.HasPrefix(line, "Starting ") {
					time.AfterFunc(tt.after, cancel)
				}
			}
			start := time.Now()
			vm, err := e.manager().Create(ctx, jobvm.Job{ID: job}, logf)
			took := time.Since(start)
			require.Error(t, err)
			assert.Nil(t, vm)
			t.Logf("cancelled create returned after %s: %v", took.Round(time.Millisecond), err)
			assert.Less(t, took, 20*time.Second, "the cleanup of a cancelled start is bounded")
			e.gone(t, jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, job, 0))
		})
	}
}
