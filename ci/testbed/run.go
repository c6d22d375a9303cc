package testbed

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// MetricsAddr is a listen_address for `run`. Every testbed's host is its
// own network namespace with its own loopback, so one fixed port serves
// all testbeds at once.
const MetricsAddr = "127.0.0.1:9252"

// Metrics is one scrape of the runner's /metrics, by family name.
type Metrics map[string]*dto.MetricFamily

// Metrics scrapes addr (the runner's listen_address) and parses the text
// format with Prometheus' own parser.
func (tb *Testbed) Metrics(ctx context.Context, addr string) (Metrics, error) {
	text, err := tb.Scrape(ctx, addr)
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return Metrics(fams), nil
}

// WaitMetrics scrapes until ok accepts a scrape (the runner may still be
// starting its metrics server) and returns that scrape; on timeout it
// fails the test with what was last seen.
func (tb *Testbed) WaitMetrics(ctx context.Context, t testing.TB, addr, what string, ok func(Metrics) bool) Metrics {
	t.Helper()
	var last Metrics
	var err error
	for {
		last, err = tb.Metrics(ctx, addr)
		if err == nil && ok(last) {
			return last
		}
		select {
		case <-ctx.Done():
			t.Fatalf("metrics never showed %s: last error %v; last scrape:\n%s", what, err, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Value is the sum of the counter or gauge values of family name over the
// series whose labels include labels (pairs: "runner", "r1", "state", "idle").
func (m Metrics) Value(name string, labels ...string) float64 {
	var sum float64
	for _, s := range m.series(name, labels) {
		switch {
		case s.Counter != nil:
			sum += s.Counter.GetValue()
		case s.Gauge != nil:
			sum += s.Gauge.GetValue()
		case s.Untyped != nil:
			sum += s.Untyped.GetValue()
		}
	}
	return sum
}

// Count is the number of observations of histogram name over the series
// whose labels include labels.
func (m Metrics) Count(name string, labels ...string) uint64 {
	var n uint64
	for _, s := range m.series(name, labels) {
		if s.Histogram != nil {
			n += s.Histogram.GetSampleCount()
		}
	}
	return n
}

func (m Metrics) series(name string, labels []string) []*dto.Metric {
	if len(labels)%2 != 0 {
		panic("testbed: Metrics labels come in name, value pairs")
	}
	f := m[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, s := range f.Metric {
		for i := 0; i < len(labels); i += 2 {
			if label(s, labels[i]) != labels[i+1] {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

func label(s *dto.Metric, name string) string {
	for _, l := range s.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// String lists the bhyve executor's series, for failure messages.
func (m Metrics) String() string {
	var b strings.Builder
	for name, f := range m {
		if !strings.HasPrefix(name, "gitlab_runner_bhyve_") {
			continue
		}
		_, _ = expfmt.MetricFamilyToText(&b, f)
	}
	return b.String()
}

// MaxOverlap is the largest number of jobs that were held by a runner at
// the same moment: from GitLab handing a job out (ReceivedAt) to its final
// update (FinishedAt), the span upstream's `limit` counts.
func MaxOverlap(recs []gitlab.JobRecord) int {
	max := 0
	for _, a := range recs {
		n := 0
		// The moment a job is handed out is when the count can rise.
		for _, b := range recs {
			if !b.ReceivedAt.After(a.ReceivedAt) && b.FinishedAt.After(a.ReceivedAt) {
				n++
			}
		}
		if n > max {
			max = n
		}
	}
	return max
}

// WaitTrace waits until job id's trace, as GitLab received it, contains s.
func (tb *Testbed) WaitTrace(ctx context.Context, t testing.TB, id int64, s string) gitlab.JobRecord {
	t.Helper()
	for {
		rec, ok := tb.GitLab.Job(id)
		if !ok {
			t.Fatalf("no job %d", id)
		}
		if strings.Contains(rec.Trace, s) {
			return rec
		}
		if rec.Done() {
			t.Fatalf("job %d ended %s without %q in its trace:\n%s", id, rec.Status, s, rec.Trace)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d (%s) never printed %q: %v; trace so far:\n%s", id, rec.Status, s, ctx.Err(), rec.Trace)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// VMCalls counts the `vm` invocations with subcommand sub (clone, start,
// destroy, ...) the host has seen.
func (tb *Testbed) VMCalls(t testing.TB, sub string) int {
	t.Helper()
	calls, err := tb.Host.VMInvocations()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, argv := range calls {
		for _, a := range argv {
			if strings.HasPrefix(a, "-") {
				continue
			}
			if a == sub {
				n++
			}
			break
		}
	}
	return n
}

// ZipFile is the content of name in the zip archive at path (an uploaded
// artifacts archive).
func ZipFile(t testing.TB, path, name string) string {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("open artifacts archive: %v", err)
	}
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		if f.Name != name {
			names = append(names, f.Name)
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("%s in %s: %v", name, path, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("%s in %s: %v", name, path, err)
		}
		return string(b)
	}
	t.Fatalf("%s has no %s, only %v", path, name, names)
	return ""
}

// JobLog is a trace as GitLab's job log page shows it: TraceLines joined,
// so a script's output line is a whole line.
func JobLog(trace string) string {
	return strings.Join(TraceLines(trace), "\n") + "\n"
}
