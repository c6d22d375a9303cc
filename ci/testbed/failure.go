package testbed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FrontEnd is one way an operator puts our executor behind gitlab-runner:
// the native `bhyve` executor built into the runner, or upstream's Custom
// executor calling bhyve-executor. A behaviour users rely on must hold
// through both.
type FrontEnd struct {
	Name     string // subtest name
	Executor string // `--executor` for register
}

// FrontEnds are both front-ends, for table tests.
var FrontEnds = []FrontEnd{
	{Name: "native", Executor: "bhyve"},
	{Name: "custom", Executor: "custom"},
}

// RegisterFrontEnd registers runner name through fe, with the Custom
// executor's flags (CustomArgs) where fe needs them.
func (tb *Testbed) RegisterFrontEnd(ctx context.Context, t testing.TB, fe FrontEnd, name string, extra ...string) string {
	t.Helper()
	if fe.Executor == "custom" {
		extra = append(tb.CustomArgs(name), extra...)
	}
	return tb.Register(ctx, t, name, fe.Executor, extra...)
}

// GuestProcesses lists the PIDs of live processes on this machine whose
// command line contains token. Simulated guests are namespaces of this
// machine, so a job script's processes are visible here: a test gives its
// script a command line no other process has (e.g. `sleep 600.<unique>`)
// and watches it start and die.
func GuestProcesses(token string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone meanwhile, a zombie or a kernel thread (proc(5))
		}
		if bytes.Contains(bytes.ReplaceAll(b, []byte{0}, []byte{' '}), []byte(token)) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// WaitGuestProcess waits until a process whose command line contains token
// runs, and returns when it was first seen.
func WaitGuestProcess(ctx context.Context, t testing.TB, token string) time.Time {
	t.Helper()
	return waitGuestProcesses(ctx, t, token, true)
}

// WaitGuestProcessGone waits until no process with token is left, and
// returns when that was seen; it fails the test if one outlives ctx.
func WaitGuestProcessGone(ctx context.Context, t testing.TB, token string) time.Time {
	t.Helper()
	return waitGuestProcesses(ctx, t, token, false)
}

func waitGuestProcesses(ctx context.Context, t testing.TB, token string, running bool) time.Time {
	t.Helper()
	for {
		pids, err := GuestProcesses(token)
		if err != nil {
			t.Fatal(err)
		}
		if (len(pids) > 0) == running {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			if running {
				t.Fatalf("no process with %q ever ran: %v", token, ctx.Err())
			}
			t.Fatalf("processes %v with %q still run: %v", pids, token, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// JobVMsGoneAt waits until `vm list` shows nothing but templates and
// returns when that was first seen (WaitOnlyTemplates, timed).
func (tb *Testbed) JobVMsGoneAt(ctx context.Context, t testing.TB, templates ...string) time.Time {
	t.Helper()
	tb.WaitOnlyTemplates(ctx, t, templates...)
	return time.Now()
}

// traceLinePrefix is what upstream's trace format puts before each line's
// text: a timestamp, a stream number, O or E (stdout, stderr), then " " for
// a new line or "+" for one that continues the previous
// (common/buildlogger/internal/timestamper).
var traceLinePrefix = regexp.MustCompile(`^\d{4}-\d\d-\d\dT[0-9:.]+Z [0-9a-f]{2}[OE]([+ ])`)

// terminalControl are the escape sequences upstream puts in a trace:
// colours and erase-line.
var terminalControl = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// TraceLines is a job trace as the job log shows it: one string per line,
// without timestamps and terminal control, continuations joined, so a test
// can ask whether a script printed a line.
func TraceLines(trace string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(trace, "\n"), "\n") {
		l = terminalControl.ReplaceAllString(strings.ReplaceAll(l, "\r", ""), "")
		m := traceLinePrefix.FindStringSubmatch(l)
		if m == nil {
			out = append(out, l)
			continue
		}
		text := l[len(m[0]):]
		if m[1] == "+" && len(out) > 0 {
			out[len(out)-1] += text
			continue
		}
		out = append(out, text)
	}
	return out
}

// HasTraceLine reports whether the job log has the line exactly.
func HasTraceLine(trace, line string) bool {
	for _, l := range TraceLines(trace) {
		if l == line {
			return true
		}
	}
	return false
}
