package testbed

import (
	"context"
	"regexp"
	"strconv"
	"testing"
)

// JobVM is the name of the VM that runs job id (JobVMName puts the job ID
// between the runner's slug and the slot: ...-ID-SLOT).
func (tb *Testbed) JobVM(ctx context.Context, t testing.TB, id int64) string {
	t.Helper()
	re := regexp.MustCompile(`-` + strconv.FormatInt(id, 10) + `-[0-9]+$`)
	for _, name := range tb.VMs(ctx, t) {
		if re.MatchString(name) {
			return name
		}
	}
	t.Fatalf("no VM for job %d in vm list: %v", id, tb.VMs(ctx, t))
	return ""
}
