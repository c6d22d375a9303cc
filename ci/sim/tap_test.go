package sim_test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

var tapRe = regexp.MustCompile(`initialising network device (\S+)`)

// guestTap is the tap the latest `vm _run` of name made, from its
// NAME/vm-bhyve.log.
func guestTap(t *testing.T, h *sim.Host, name string) string {
	t.Helper()
	log := readFile(filepath.Join(h.VMDir(), name, "vm-bhyve.log"))
	m := tapRe.FindAllStringSubmatch(log, -1)
	if m == nil {
		t.Fatalf("%s/vm-bhyve.log names no tap:\n%s", name, log)
	}
	return m[len(m)-1][1]
}

func linkExists(h *sim.Host, dev string) bool {
	return exec.Command("ip", "-n", h.NetNS(), "link", "show", "dev", dev).Run() == nil
}

// TestTapUnitStaysTakenUntilItsRunDestroysIt: on FreeBSD a tap outlives the
// bhyve that opened it, and its unit is reused only after vm::run's cleanup
// destroyed it. The simulator's veth tap vanishes with a dead guest's network
// namespace, which the kernel tears down on its own schedule, possibly
// before that _run's cleanup deletes the tap by name; a guest started in
// between must neither get the unit nor lose its tap to that delete.
func TestTapUnitStaysTakenUntilItsRunDestroysIt(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h := sim.New(t, sim.Options{})
	for _, name := range []string{"tap-a", "tap-b"} {
		mustVM(t, ctx, h, "clone", h.Template()+"@"+h.Snapshot(), name)
	}
	mustVM(t, ctx, h, "start", "tap-a")
	if _, err := h.GuestAddr(ctx, "tap-a"); err != nil {
		t.Fatalf("tap-a: %v\nconsole:\n%s", err, readFile(h.GuestLog("tap-a")))
	}
	tapA := guestTap(t, h, "tap-a")
	// What the kernel's namespace teardown does to a guest's veth, here
	// while tap-a's _run still runs and has not cleaned up yet.
	if out, err := exec.Command("ip", "-n", h.NetNS(), "link", "del", "dev", tapA).CombinedOutput(); err != nil {
		t.Fatalf("ip link del %s: %v: %s", tapA, err, out)
	}

	mustVM(t, ctx, h, "start", "tap-b")
	addrB, err := h.GuestAddr(ctx, "tap-b")
	if err != nil {
		t.Fatalf("tap-b: %v\nconsole:\n%s", err, readFile(h.GuestLog("tap-b")))
	}
	tapB := guestTap(t, h, "tap-b")
	if tapB == tapA {
		t.Errorf("tap-b got %s, whose unit tap-a's _run has not destroyed yet", tapB)
	}

	// tap-a's _run now runs its cleanup, which deletes its own tap by name.
	mustVM(t, ctx, h, "poweroff", "-f", "tap-a")
	waitState(t, ctx, h, "tap-a", "Stopped")
	if !linkExists(h, tapB) {
		t.Fatalf("tap-b's tap %s is gone after tap-a stopped\ntap-a/vm-bhyve.log:\n%s", tapB,
			readFile(filepath.Join(h.VMDir(), "tap-a", "vm-bhyve.log")))
	}
	waitSSH(t, ctx, h, "tap-b", addrB, "true")

	// Once tap-a's _run is done, its unit is free again.
	mustVM(t, ctx, h, "start", "tap-a")
	waitState(t, ctx, h, "tap-a", "Running")
	if got := guestTap(t, h, "tap-a"); got != tapA {
		t.Errorf("restarted tap-a got %s, want the freed unit's %s", got, tapA)
	}
}
