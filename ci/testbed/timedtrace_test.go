package testbed

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTimedTrace(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return v
	}
	for _, tc := range []struct {
		name  string
		trace string
		want  TimedTrace
	}{
		{
			name:  "empty",
			trace: "",
			want:  nil,
		},
		{
			name: "colours, erase codes, carriage returns and the echoed command",
			trace: "2026-12-01T08:54:30.100000Z 00O \x1b[0KRunning with gitlab-runner 19.4.0\n" +
				"2026-12-01T08:54:30.200993Z 01O+\x1b[0K\x1b[36;1mExecuting \"step_script\"\x1b[0;m\n" +
				"2026-12-01T08:54:30.300000Z 01O \x1b[32;1m$ printf 'bench-%s\\n' first\x1b[0;m\n" +
				"2026-12-01T08:54:30.400001Z 01O bench-first\n" +
				"2026-12-01T08:54:30.500000Z 01E oops\r\n",
			want: TimedTrace{
				{At: at("2026-12-01T08:54:30.100000Z"), Text: `Running with gitlab-runner 19.4.0Executing "step_script"`},
				{At: at("2026-12-01T08:54:30.300000Z"), Text: `$ printf 'bench-%s\n' first`},
				{At: at("2026-12-01T08:54:30.400001Z"), Text: "bench-first"},
				{At: at("2026-12-01T08:54:30.500000Z"), Stderr: true, Text: "oops"},
			},
		},
		{
			name: "a continued line keeps the time of its first fragment",
			trace: "2026-12-01T08:54:30.100000Z 01O bench-\n" +
				"2026-12-01T08:54:31.000000Z 01O+first\n",
			want: TimedTrace{{At: at("2026-12-01T08:54:30.100000Z"), Text: "bench-first"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTimedTrace(tc.trace)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			var texts []string
			for _, l := range got {
				texts = append(texts, l.Text)
			}
			if tc.trace != "" {
				assert.Equal(t, TraceLines(tc.trace), texts, "the same lines as TraceLines, with times")
			}
		})
	}
}

func TestParseTimedTraceWithoutTimestamps(t *testing.T) {
	_, err := ParseTimedTrace("2026-12-01T08:54:30.100000Z 00O fine\nRunning with gitlab-runner 19.4.0\n")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 2")
	assert.Contains(t, err.Error(), "FF_TIMESTAMPS")
}

func TestTimedTraceIndex(t *testing.T) {
	tt, err := ParseTimedTrace("2026-12-01T08:54:30.300000Z 01O \x1b[32;1m$ printf 'bench-%s\\n' first\x1b[0;m\n" +
		"2026-12-01T08:54:30.400001Z 01O bench-first\n" +
		"2026-12-01T08:54:30.500000Z 01O bench-first\n")
	require.NoError(t, err)
	assert.Equal(t, 1, tt.Index("bench-first"), "the first of two equal lines, not the echoed command")
	assert.Equal(t, -1, tt.Index("bench-"), "only whole lines match")
}
