//go:build !freebsd

package hostmem

import (
	"context"
	"strings"
	"testing"
)

func TestKernelOutsideFreeBSDSaysWhatToSet(t *testing.T) {
	_, err := Free(context.Background(), Kernel())
	if err == nil || !strings.Contains(err.Error(), "set sysctl_command") {
		t.Fatalf("Free(Kernel()) = %v; want an error that says to set sysctl_command", err)
	}
}
