package testbed

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// TraceLine is one line of a job trace with the time upstream 19.x stamped
// on it (FF_TIMESTAMPS, on by default, helpers/featureflags): the moment the
// runner's log writer took the line's first byte
// (common/buildlogger/internal/timestamper), e.g.
//
//	2026-12-01T08:54:30.200993Z 01O hello
//
// The runner's clock is the machine's, so At compares with the fake GitLab's
// records (JobRecord.ReceivedAt, FinishedAt) to the microsecond, where the
// arrival of trace patches is quantised by the update interval.
type TraceLine struct {
	At     time.Time
	Stderr bool
	Text   string // as TraceLines gives it: no terminal control, continuations joined
}

// TimedTrace is a job trace split into TraceLines.
type TimedTrace []TraceLine

// traceStamp is traceLinePrefix with the timestamp and the stream captured.
var traceStamp = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) [0-9a-f]{2}([OE])([+ ])`)

// ParseTimedTrace splits a trace into timed lines. A line without the
// timestamp is an error: the runner does not stamp its lines (FF_TIMESTAMPS
// is off) or the trace is not upstream's.
func ParseTimedTrace(trace string) (TimedTrace, error) {
	if trace == "" {
		return nil, nil
	}
	var out TimedTrace
	for i, raw := range strings.Split(strings.TrimSuffix(trace, "\n"), "\n") {
		m := traceStamp.FindStringSubmatch(raw)
		if m == nil {
			return nil, fmt.Errorf("trace line %d has no timestamp (is FF_TIMESTAMPS off?): %q", i+1, raw)
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", i+1, err)
		}
		text := terminalControl.ReplaceAllString(strings.ReplaceAll(raw[len(m[0]):], "\r", ""), "")
		if m[3] == "+" && len(out) > 0 {
			out[len(out)-1].Text += text
			continue
		}
		out = append(out, TraceLine{At: at, Stderr: m[2] == "E", Text: text})
	}
	return out, nil
}

// Index is the position of the first line whose text is exactly text, -1
// if there is none. A script that prints a marker its command does not
// contain literally (printf 'a-%s\n' b prints a-b) finds its output, not
// the echoed command.
func (tt TimedTrace) Index(text string) int {
	for i, line := range tt {
		if line.Text == text {
			return i
		}
	}
	return -1
}
