package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea/keatest"
)

// Row 3: finding a MAC's lease in a big Kea lease file.
const (
	leaseRows     = 1_000_000
	leaseMACRow   = 999_000 // near the end
	leaseReps     = 15
	pollReps      = 15
	pollAppend    = 100 // rows appended before each repeated poll
	leaseMACText  = "58:9c:fc:04:2e:9b"
	grepMatchRows = 1
)

func leaseRow(b *bench) ([]row, []target, error) {
	ctx := b.ctx
	dir := filepath.Join(b.tmp, "kea")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "kea-leases4.csv")
	mac, err := net.ParseMAC(leaseMACText)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	info, err := keatest.WriteFile(f, keatest.Options{Version: keatest.V22, Rows: leaseRows, MAC: mac,
		MACRows: []int{leaseMACRow}, Now: time.Now(), Seed: 1})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("write the lease file: %w", err)
	}
	b.progress("row 3: wrote %s rows (%s), MAC %s on line %d", fmt.Sprint(leaseRows), fmtBytes(float64(info.Bytes)), mac, info.Line)
	if err := warmCache(path); err != nil {
		return nil, nil, err
	}

	reader := kea.NewReader(path)
	lookup := func() (time.Duration, error) {
		t0 := time.Now()
		l, err := reader.Lookup(ctx, mac, time.Now())
		d := time.Since(t0)
		if err != nil {
			return 0, err
		}
		if l.Line != info.Line || l.Address != info.Address {
			return 0, fmt.Errorf("lookup found %s on line %d, want %s on line %d", l.Address, l.Line, info.Address, info.Line)
		}
		return d, nil
	}
	grep := func() (time.Duration, error) { return timeGrep(path, leaseMACText) }

	var ours, theirs []time.Duration
	for i := range leaseReps {
		first, second := lookup, grep
		if i%2 == 1 {
			first, second = grep, lookup
		}
		d1, err := first()
		if err != nil {
			return nil, nil, err
		}
		d2, err := second()
		if err != nil {
			return nil, nil, err
		}
		if i%2 == 1 {
			d1, d2 = d2, d1
		}
		ours, theirs = append(ours, d1), append(theirs, d2)
	}

	// Repeated polls: a Watch read the whole file once; after each append
	// it must read only the appended bytes.
	w := reader.Watch(mac)
	defer w.Close()
	if _, err := w.Poll(ctx, time.Now()); err != nil {
		return nil, nil, err
	}
	af, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer af.Close()
	var polls, regreps []time.Duration
	var worstRead, worstAppended int64
	worst := -1.0
	for i := range pollReps {
		batch := appendBatch(i, pollAppend, time.Now())
		if _, err := af.Write(batch); err != nil {
			return nil, nil, err
		}
		poll := func() (time.Duration, error) {
			before := w.BytesRead()
			t0 := time.Now()
			l, err := w.Poll(ctx, time.Now())
			d := time.Since(t0)
			if err != nil {
				return 0, err
			}
			if l.Line != info.Line {
				return 0, fmt.Errorf("poll found line %d, want %d", l.Line, info.Line)
			}
			read := w.BytesRead() - before
			if r := float64(read) / float64(len(batch)); r > worst {
				worst, worstRead, worstAppended = r, read, int64(len(batch))
			}
			return d, nil
		}
		var dp, dg time.Duration
		if i%2 == 0 {
			if dp, err = poll(); err == nil {
				dg, err = grep()
			}
		} else {
			if dg, err = grep(); err == nil {
				dp, err = poll()
			}
		}
		if err != nil {
			return nil, nil, err
		}
		polls, regreps = append(polls, dp), append(regreps, dg)
	}

	so, st := summarize(seconds(ours)), summarize(seconds(theirs))
	sp, sg := summarize(seconds(polls)), summarize(seconds(regreps))
	lookupOverGrep := so.Median / st.Median
	rows := []row{
		{ID: "3a", What: fmt.Sprintf("lease lookup, %s Kea file (1M rows, MAC near end): ours vs `grep -F MAC`", fmtBytes(float64(info.Bytes))),
			Ours: spread(so, fmtDur), Base: spread(st, fmtDur), Ratio: "ours/grep=" + fmtRatio(lookupOverGrep), N: fmt.Sprint(so.N),
			Note: "page cache warm, alternating; grep's output goes to a pipe (GNU grep stops at the first match when it writes to /dev/null)"},
		{ID: "3b", What: fmt.Sprintf("repeated poll after +%d rows: Watch.Poll vs grep of the whole file", pollAppend),
			Ours: spread(sp, fmtDur), Base: spread(sg, fmtDur), Ratio: "grep/poll=" + fmtRatio(sg.Median/sp.Median), N: fmt.Sprint(sp.N),
			Note: fmt.Sprintf("bytes read by a poll / bytes appended, worst of %d: %d/%d", pollReps, worstRead, worstAppended)},
	}
	return rows, []target{
		atMost("lease_lookup_vs_grep", lookupOverGrep, 1.5),
		{Name: "poll_reads_only_new_bytes", Measured: fmt.Sprintf("%s(%dB/%dB)", fmtRatio(worst), worstRead, worstAppended),
			Goal: "<=1.0x", Met: worst >= 0 && worstRead <= worstAppended},
	}, nil
}

// warmCache reads the file once so that both contenders find it in memory.
func warmCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// timeGrep runs `grep -F mac path` with its output on a pipe and checks it
// found the row.
func timeGrep(path, mac string) (time.Duration, error) {
	var out bytes.Buffer
	cmd := exec.Command("grep", "-F", mac, path)
	cmd.Stdout = &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("grep: %w", err)
	}
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != grepMatchRows {
		return 0, fmt.Errorf("grep printed %d lines, want %d", n, grepMatchRows)
	}
	return d, nil
}

// appendBatch returns n lease rows for other VMs, as Kea appends them: new
// addresses (never the measured MAC's), expiring in an hour.
func appendBatch(batch, n int, now time.Time) []byte {
	var out []byte
	for i := range n {
		k := batch*n + i
		mac := net.HardwareAddr{0x58, 0x9c, 0xfc, 0x0e, byte(k >> 8), byte(k)}
		out = keatest.AppendRow(out, keatest.V22, keatest.Row{
			Address:       netip.AddrFrom4([4]byte{10, 1, byte(k >> 8), byte(k)}),
			HWAddr:        mac,
			ClientID:      "01:" + mac.String(),
			ValidLifetime: 3600,
			Expire:        now.Unix() + 3600,
			SubnetID:      1,
			Hostname:      fmt.Sprintf("ci-poll-%d", k),
		})
	}
	return out
}
