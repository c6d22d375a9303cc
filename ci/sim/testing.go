package sim

import (
	"context"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/host"
)

// New starts a host for a test and removes it when the test ends, passed or
// failed. Missing prerequisites (root, kea-dhcp4, sshd, udhcpc, ip, ...)
// fail the test with the Debian package to install; it never skips. The
// root defaults to a t.TempDir().
func New(t testing.TB, o Options) *Host {
	t.Helper()
	if _, err := host.Prerequisites(); err != nil {
		t.Fatalf("simulated FreeBSD host: %v", err)
	}
	if o.Root == "" {
		o.Root = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("simulated FreeBSD host: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("simulated FreeBSD host teardown: %v", err)
		}
		if r := h.Resources(); !r.Empty() {
			t.Errorf("simulated FreeBSD host left resources behind:\n%s", r)
		}
	})
	return h
}
