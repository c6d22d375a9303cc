package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTraceLines(t *testing.T) {
	// As upstream's timestamper writes them (see TraceLines), from a real
	// job of the sandbox runner.
	trace := "2026-12-01T09:07:16.327537Z 00O section_start:1796116036:prepare_executor\r\x1b[0K\n" +
		"2026-12-01T09:07:16.327540Z 00O+\x1b[0KPreparing the \"bhyve\" executor\n" +
		"2026-12-01T09:07:16.843511Z 01O BEFORE-EXIT\n" +
		"2026-12-01T09:07:16.843512Z 01E  two spaces kept\n" +
		"2026-12-01T09:07:16.933138Z 00O \x1b[31;1mERROR: Job failed: exit status 42\x1b[0;m\n"
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"section_start:1796116036:prepare_executorPreparing the \"bhyve\" executor", true},
		{"Preparing the \"bhyve\" executor", false}, // a continuation, not a line
		{"BEFORE-EXIT", true},
		{"BEFORE", false},
		{" two spaces kept", true},
		{"ERROR: Job failed: exit status 42", true},
	} {
		t.Run(tc.line, func(t *testing.T) {
			assert.Equal(t, tc.want, HasTraceLine(trace, tc.line), "lines: %q", TraceLines(trace))
		})
	}
	assert.Len(t, TraceLines(trace), 4)
}

func TestGuestProcessesSeesAProcessStartAndDie(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token := fmt.Sprintf("30.%09d", os.Getpid())
	cmd := exec.Command("sleep", token)
	require.NoError(t, cmd.Start())
	WaitGuestProcess(ctx, t, token)
	pids, err := GuestProcesses(token)
	require.NoError(t, err)
	assert.Equal(t, []int{cmd.Process.Pid}, pids)

	require.NoError(t, cmd.Process.Kill())
	// Not reaped yet: a zombie is not a running process.
	WaitGuestProcessGone(ctx, t, token)
	_ = cmd.Wait()
}
