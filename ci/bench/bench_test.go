package main

import (
	"context"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea/keatest"
)

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in             []float64
		n              int
		med, low, high float64
	}{
		{[]float64{3, 1, 2}, 3, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 4, 2.5, 1, 4},
		{[]float64{7}, 1, 7, 7, 7},
	} {
		s := summarize(c.in)
		if s.N != c.n || s.Median != c.med || s.Lo != c.low || s.Hi != c.high {
			t.Errorf("summarize(%v) = %+v, want n %d median %v range %v..%v", c.in, s, c.n, c.med, c.low, c.high)
		}
	}
	in := []float64{3, 1, 2}
	summarize(in)
	if in[0] != 3 {
		t.Errorf("summarize sorted its input in place: %v", in)
	}
	if s := summarize(nil); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("summarize(nil) = %+v, want N 0 and a NaN median", s)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtDur(0.0000123), "12.3µs"},
		{fmtDur(0.00540), "5.40ms"},
		{fmtDur(0.454), "454ms"},
		{fmtDur(2.57), "2.57s"},
		{fmtDur(123.4), "123s"},
		{fmtDur(-0.002), "-2.00ms"},
		{fmtDur(math.NaN()), "n/a"},
		{fmtBytes(512), "512B"},
		{fmtBytes(8480), "8.28KiB"},
		{fmtBytes(23.9 * (1 << 20)), "23.9MiB"},
		{fmtBytes(1 << 30), "1.00GiB"},
		{fmtRate(396e6), "396MB/s"},
		{fmtRatio(84.04), "84.0x"},
		{fmtRatio(0.0712), "0.07x"},
		{fmtRatio(1234), "1234x"},
		{fmtRatio(math.Inf(1)), "n/a"},
		{spread(summary{N: 3, Median: 0.005, Lo: 0.004, Hi: 0.009}, fmtDur), "5.00ms [4.00ms..9.00ms]"},
		{spread(summary{N: 1, Median: 0.005, Lo: 0.005, Hi: 0.005}, fmtDur), "5.00ms"},
		{spread(summary{}, fmtDur), "n/a"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestTargets(t *testing.T) {
	for _, c := range []struct {
		tg   target
		want string
	}{
		{atMost("warm_start_vs_bare_ssh", 1.3, 2.0), "TARGET warm_start_vs_bare_ssh 1.30x <=2.0x MET"},
		{atMost("warm_start_vs_bare_ssh", 2.01, 2.0), "TARGET warm_start_vs_bare_ssh 2.01x <=2.0x MISSED"},
		{atMost("streaming_memory_flat", 1.25, 1.25), "TARGET streaming_memory_flat 1.25x <=1.25x MET"},
		{atLeast("per_stage_overhead_vs_fresh_ssh", 46.5, 10), "TARGET per_stage_overhead_vs_fresh_ssh 46.5x >=10.0x MET"},
		{atLeast("streaming_throughput_vs_ssh", 0.79, 0.8), "TARGET streaming_throughput_vs_ssh 0.79x >=0.8x MISSED"},
		{atLeast("x", math.NaN(), 0.8), "TARGET x n/a >=0.8x MISSED"},
		{atMost("x", math.NaN(), 1.5), "TARGET x n/a <=1.5x MISSED"},
		{unmeasured("lease_lookup_vs_grep", "<=1.5x"), "TARGET lease_lookup_vs_grep n/a <=1.5x MISSED"},
		{target{Name: "a b", Measured: "1 x", Goal: "<= 1", Met: true}, "TARGET a_b 1_x <=_1 MET"},
	} {
		if got := c.tg.String(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
		if f := strings.Fields(c.tg.String()); len(f) != 5 {
			t.Errorf("%q has %d fields, want 5", c.tg.String(), len(f))
		}
	}
}

func TestFormatTable(t *testing.T) {
	out := formatTable([]row{
		{ID: "1a", What: "short", Ours: "5.40ms", Base: "454ms", Ratio: "cold/warm=84.0x", N: "9/9", Note: "first note\nsecond line"},
		{ID: "2a", What: "a longer measure", Ours: "4.49ms [4.35ms..9.19ms]", Base: "209ms", Ratio: "ssh/ours=46.5x", N: "5x10"},
	})
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("want header, rule, 2 rows and 2 note lines, got:\n%s", out)
	}
	col := strings.Index(lines[0], "OURS")
	for _, i := range []int{2, 5} {
		if strings.Index(lines[i], "5.40ms") != col && strings.Index(lines[i], "4.49ms") != col {
			t.Errorf("line %d does not start OURS at column %d:\n%s", i, col, out)
		}
	}
	if !strings.HasPrefix(lines[3], "       first note") || !strings.HasPrefix(lines[4], "       second line") {
		t.Errorf("notes are not indented under their row:\n%s", out)
	}
	if !strings.Contains(formatTable([]row{failedRow("4", "streaming", os.ErrClosed)}), "FAILED") {
		t.Error("a failed row does not say FAILED")
	}
}

const procStat = `cpu  4705 150 1120 16250 520 30 40 5 0 0
cpu0 1393 75 560 8000 260 15 20 3 0 0
cpu1 3312 75 560 8250 260 15 20 2 0 0
intr 114930548 113199788 3 0 5 263 0 0 0
ctxt 1990473
`

func TestParseProcStat(t *testing.T) {
	st, err := parseProcStat(procStat)
	if err != nil {
		t.Fatal(err)
	}
	busy := uint64(4705 + 150 + 1120 + 30 + 40 + 5)
	if st.Busy != busy || st.Total != busy+16250+520 {
		t.Errorf("got %+v, want busy %d total %d", st, busy, busy+16250+520)
	}
	if _, err := parseProcStat("cpu0 1 2 3 4\n"); err == nil {
		t.Error("no aggregate cpu line: want an error")
	}
	if _, err := parseProcStat("cpu 1 2 x 4 5\n"); err == nil {
		t.Error("non-numeric field: want an error")
	}
	// Old kernels stop after iowait; the missing fields count as 0.
	if st, err := parseProcStat("cpu 10 0 5 100 1\n"); err != nil || st.Busy != 15 || st.Total != 116 {
		t.Errorf("short line: got %+v, %v", st, err)
	}
	if d := machineCPU(cpuStat{Busy: 100}, cpuStat{Busy: 350}); d != 2500*time.Millisecond {
		t.Errorf("250 ticks = %s, want 2.5s", d)
	}
	if _, err := readProcStat(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tbench\nVmPeak:\t  800000 kB\nVmHWM:\t   24472 kB\nVmRSS:\t   12700 kB\nThreads:\t7\n"
	if v, err := parseStatusKB(status, "VmHWM"); err != nil || v != 24472<<10 {
		t.Errorf("VmHWM = %d, %v; want %d", v, err, 24472<<10)
	}
	if v, err := parseStatusKB(status, "VmRSS"); err != nil || v != 12700<<10 {
		t.Errorf("VmRSS = %d, %v", v, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("missing field: want an error")
	}
	if _, err := parseStatusKB(status, "Threads"); err == nil {
		t.Error("a field without kB: want an error")
	}
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := parseStatusKB(string(self), "VmHWM"); err != nil || v <= 0 {
		t.Errorf("own VmHWM = %d, %v", v, err)
	}
}

func TestParseTimeMaxRSS(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"8672\n", 8672 << 10, true},
		{"Command exited with non-zero status 1\n2048\n", 2048 << 10, true},
		{"", 0, false},
		{"Command terminated by signal 9\n", 0, false},
		{"-5\n", 0, false},
	} {
		got, err := parseTimeMaxRSS(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseTimeMaxRSS(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestSelfAndChildrenCPUGrows(t *testing.T) {
	before, err := selfAndChildrenCPU()
	if err != nil {
		t.Fatal(err)
	}
	x := 0.0
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		x += math.Sqrt(x + 1)
	}
	after, err := selfAndChildrenCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := after.sub(before).Total(); d < 10*time.Millisecond {
		t.Errorf("50ms of spinning counted as %s of CPU (x=%v)", d, x)
	}
}

func TestFirstByte(t *testing.T) {
	var f firstByte
	t0 := time.Now()
	if _, err := f.since(t0); err == nil {
		t.Error("no output yet: want an error")
	}
	f.Write(nil)
	if _, err := f.since(t0); err == nil {
		t.Error("an empty write is not output")
	}
	time.Sleep(2 * time.Millisecond)
	f.Write([]byte("x"))
	first, err := f.since(t0)
	if err != nil || first < 2*time.Millisecond {
		t.Errorf("since = %s, %v", first, err)
	}
	time.Sleep(2 * time.Millisecond)
	f.Write([]byte("y"))
	if again, _ := f.since(t0); again != first {
		t.Errorf("a later write moved the first byte from %s to %s", first, again)
	}
}

// The rows appended between polls must be rows Kea could have written,
// or the poll would measure error handling instead of reading.
func TestAppendBatchIsReadableByKea(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kea-leases4.csv")
	data := []byte(keatest.Header(keatest.V22) + "\n")
	data = append(data, appendBatch(0, pollAppend, time.Now())...)
	data = append(data, appendBatch(1, pollAppend, time.Now())...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 1+2*pollAppend {
		t.Fatalf("%d lines, want %d", n, 1+2*pollAppend)
	}
	mac := net.HardwareAddr{0x58, 0x9c, 0xfc, 0x0e, 0, 150} // row 50 of batch 1
	l, err := kea.NewReader(path).Lookup(context.Background(), mac, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if l.Address.String() != "10.1.0.150" || l.Line != 2+150 {
		t.Errorf("lease %s on line %d, want 10.1.0.150 on line %d", l.Address, l.Line, 2+150)
	}
	measured, _ := net.ParseMAC(leaseMACText)
	if strings.Contains(string(data), measured.String()) || strings.Contains(string(data), keatest.MACAddress.String()+",") {
		t.Error("appended rows must not touch the measured MAC or its address")
	}
}
