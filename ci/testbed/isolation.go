package testbed

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// WaitTrace waits until job id's trace so far contains s and returns it.
func (tb *Testbed) WaitTrace(ctx context.Context, t testing.TB, id int64, s string) gitlab.JobRecord {
	t.Helper()
	for {
		rec, _ := tb.GitLab.Job(id)
		if strings.Contains(rec.Trace, s) {
			return rec
		}
		if rec.Done() {
			t.Fatalf("job %d finished (%s, %s) before its trace showed %q:\n%s", id, rec.Status, rec.FailureReason, s, rec.Trace)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d: no %q in its trace: %v\n%s", id, s, ctx.Err(), rec.Trace)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

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
