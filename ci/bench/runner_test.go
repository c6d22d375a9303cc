package main

import (
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// A trace shaped like upstream 19.4's for the marker job on the native
// executor (recorded from a run, section numbers shortened).
const markerTrace = "2026-12-01T09:17:59.137880Z 00O \x1b[0KRunning with gitlab-runner 19.4.0 (fc1f1862)\n" +
	"2026-12-01T09:17:59.486874Z 00O+section_start:1796116679:step_script\r\x1b[0K\n" +
	"2026-12-01T09:17:59.486887Z 00O+\x1b[0KExecuting \"step_script\" stage of the job script\n" +
	"2026-12-01T09:17:59.529199Z 01O \x1b[32;1m$ printf 'bench-%s\\n' first-line\x1b[0;m\n" +
	"2026-12-01T09:17:59.529252Z 01O bench-first-line\n" +
	"2026-12-01T09:17:59.529253Z 01O \x1b[32;1m$ printf 'bench-%s\\n' last-line\x1b[0;m\n" +
	"2026-12-01T09:17:59.529254Z 01O bench-last-line\n" +
	"2026-12-01T09:17:59.530014Z 00O section_end:1796116679:step_script\r\x1b[0K\n" +
	"2026-12-01T09:17:59.530688Z 00O+section_start:1796116679:cleanup_file_variables\r\x1b[0K\n" +
	"2026-12-01T09:17:59.530698Z 00O+\x1b[0KCleaning up project directory and file based variables\n" +
	"2026-12-01T09:17:59.638398Z 00O section_end:1796116679:cleanup_file_variables\r\x1b[0K\n" +
	"2026-12-01T09:17:59.807899Z 00O \x1b[32;1mJob succeeded\x1b[0;m\n"

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMarkerTimes(t *testing.T) {
	rec := gitlab.JobRecord{ID: 7, Trace: markerTrace,
		ReceivedAt: at(t, "2026-12-01T09:17:59.131415Z"), FinishedAt: at(t, "2026-12-01T09:17:59.809201Z")}
	got, err := markerTimes(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := jobTimes{
		start:       529252*time.Microsecond - 131415*time.Microsecond,
		end:         809201*time.Microsecond - 529254*time.Microsecond,
		stagesAfter: 638398*time.Microsecond - 529254*time.Microsecond,
		cleanup:     807899*time.Microsecond - 638398*time.Microsecond,
		report:      809201*time.Microsecond - 807899*time.Microsecond,
	}
	if got != want {
		t.Errorf("markerTimes = %+v, want %+v", got, want)
	}
	if got.stagesAfter+got.cleanup+got.report != got.end {
		t.Errorf("the parts of the end (%v) do not add up to it (%v)", got.stagesAfter+got.cleanup+got.report, got.end)
	}
}

func TestMarkerTimesRefusesIncompleteJobs(t *testing.T) {
	received, finished := at(t, "2026-12-01T09:17:59Z"), at(t, "2026-12-01T09:18:00Z")
	for _, c := range []struct {
		name, trace, want string
		finished          time.Time
	}{
		{"no markers", "2026-12-01T09:17:59.5Z 00O Job succeeded\n", "marker lines", finished},
		{"only the echoed commands", "2026-12-01T09:17:59.5Z 01O $ printf 'bench-%s\\n' first-line\n" +
			"2026-12-01T09:17:59.6Z 01O $ printf 'bench-%s\\n' last-line\n2026-12-01T09:17:59.7Z 00O Job succeeded\n", "marker lines", finished},
		{"not succeeded", strings.Replace(markerTrace, "Job succeeded", "Job failed: exit code 1", 1), "Job succeeded", finished},
		{"no final status", markerTrace, "no end", time.Time{}},
		{"no timestamps", "bench-first-line\nbench-last-line\nJob succeeded\n", "FF_TIMESTAMPS", finished},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := markerTimes(gitlab.JobRecord{ID: 7, Trace: c.trace, ReceivedAt: received, FinishedAt: c.finished})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("markerTimes: error %v, want one saying %q", err, c.want)
			}
		})
	}
}

func TestRunnerRows(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	jt := func(start, end int) jobTimes { return jobTimes{start: ms(start), end: ms(end)} }
	times := map[string][]jobTimes{
		"shell":  {jt(100, 10), jt(120, 20), jt(110, 30)},
		"warm":   {jt(150, 150), jt(140, 160), jt(200, 170)},
		"cold":   {jt(600, 180), jt(700, 190), jt(650, 200)},
		"Custom": {jt(900, 300), jt(800, 300), jt(1000, 300)},
	}
	walls := map[string][]time.Duration{"shell": {ms(800), ms(1000)}, "cold": {ms(2000), ms(2400)}}
	rows, targets := runnerRows(times, walls, map[string][]time.Duration{})
	ids := []string{}
	for _, r := range rows {
		ids = append(ids, r.ID)
	}
	if strings.Join(ids, ",") != "6a,6b,6c,6d,6e,6f,6g" {
		t.Fatalf("rows %v", ids)
	}
	// warm 150 / shell 110; native end (warm and cold together) 175 / shell 20.
	if rows[0].Ratio != "warm/shell=1.36x" || rows[3].Ratio != "native/shell=8.75x" || rows[3].N != "6/3" {
		t.Errorf("6a %q, 6d %q (N %s)", rows[0].Ratio, rows[3].Ratio, rows[3].N)
	}
	if rows[5].Ratio != "native/shell=2.44x" || rows[6].Ours != "218/min [200/min..240/min]" {
		t.Errorf("6f %q, 6g %q", rows[5].Ratio, rows[6].Ours)
	}
	if len(targets) != 2 || targets[0].String() != "TARGET job_start_warm_vs_shell 1.36x <=1.5x MET" ||
		targets[1].String() != "TARGET job_end_vs_shell 8.75x <=10.0x MET" {
		t.Errorf("targets %v", targets)
	}

	// Nothing measured: nothing can pass.
	_, targets = runnerRows(map[string][]jobTimes{}, map[string][]time.Duration{}, map[string][]time.Duration{})
	for _, tg := range targets {
		if tg.Met || tg.Measured != "n/a" {
			t.Errorf("%v met without measurements", tg)
		}
	}
}
