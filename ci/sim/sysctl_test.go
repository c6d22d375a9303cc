package sim_test

import (
	"os/exec"
	"testing"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// TestSysctlFreeMemory runs the installed sysctl wrapper as the executor
// does and sees the free memory a test sets.
func TestSysctlFreeMemory(t *testing.T) {
	t.Parallel()
	h := sim.New(t, sim.Options{})
	read := func() string {
		t.Helper()
		out, err := exec.Command(h.SysctlCommand(), "-n", "vm.stats.vm.v_free_count", "hw.pagesize").Output()
		if err != nil {
			t.Fatalf("%s: %v", h.SysctlCommand(), err)
		}
		return string(out)
	}
	if got, want := read(), "3145728\n4096\n"; got != want {
		t.Fatalf("default free memory: %q, want %q (12 GiB in 4 KiB pages)", got, want)
	}
	if err := h.SetFreeMemory(512 << 20); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "131072\n4096\n"; got != want {
		t.Fatalf("after SetFreeMemory(512M): %q, want %q", got, want)
	}
	if err := exec.Command(h.SysctlCommand(), "-n", "kern.nope").Run(); err == nil {
		t.Fatal("an unknown oid must fail as FreeBSD's sysctl does")
	}
}
