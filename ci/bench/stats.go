package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// summary is what the table says about a series of repeated measurements:
// the median, and the spread as the smallest and largest value.
type summary struct {
	N              int
	Median, Lo, Hi float64
}

// summarize returns the median and range of xs. An empty series has N 0 and
// NaN values, so that nothing derived from it can pass for a measurement.
func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{Median: math.NaN(), Lo: math.NaN(), Hi: math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{N: len(s), Median: m, Lo: s[0], Hi: s[len(s)-1]}
}

// seconds converts durations for summarize.
func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// fmtDur prints a duration given in seconds with three significant digits
// in a unit that suits it.
func fmtDur(s float64) string {
	switch {
	case math.IsNaN(s):
		return "n/a"
	case s < 0:
		return "-" + fmtDur(-s)
	case s == 0:
		return "0s"
	case s < 1e-3:
		return sig3(s*1e6) + "µs"
	case s < 1:
		return sig3(s*1e3) + "ms"
	}
	return sig3(s) + "s"
}

// fmtBytes prints a byte count in binary units.
func fmtBytes(b float64) string {
	switch {
	case math.IsNaN(b):
		return "n/a"
	case b < 1<<10:
		return fmt.Sprintf("%.0fB", b)
	case b < 1<<20:
		return sig3(b/(1<<10)) + "KiB"
	case b < 1<<30:
		return sig3(b/(1<<20)) + "MiB"
	}
	return sig3(b/(1<<30)) + "GiB"
}

// fmtRate prints bytes per second as MB/s (10^6 bytes).
func fmtRate(bps float64) string {
	if math.IsNaN(bps) || math.IsInf(bps, 0) {
		return "n/a"
	}
	return sig3(bps/1e6) + "MB/s"
}

// fmtRatio prints a ratio as "12.3x".
func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return sig3(r) + "x"
}

// sig3 prints v with three significant digits (at least the integer part).
func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// spread prints a summary as "median [lo..hi]" with f formatting each value.
func spread(s summary, f func(float64) string) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s..%s]", f(s.Median), f(s.Lo), f(s.Hi))
}

// row is one line of the table. Ours and Base are the two sides measured in
// the same run; Ratio says which way it is taken, e.g. "cold/warm = 41x".
type row struct {
	ID    string
	What  string
	Ours  string
	Base  string
	Ratio string
	N     string
	Note  string // printed on its own line under the row when set
}

// failedRow is the line for a row whose measurement failed.
func failedRow(id, what string, err error) row {
	return row{ID: id, What: what, Ours: "FAILED", Base: "-", Ratio: "-", N: "-", Note: "error: " + err.Error()}
}

// formatTable lays rows out in aligned columns under a header. Notes go on
// their own indented line so that long explanations do not widen the table.
func formatTable(rows []row) string {
	header := row{ID: "ROW", What: "MEASURE", Ours: "OURS median [min..max]", Base: "BASELINE median [min..max]", Ratio: "RATIO (median)", N: "N"}
	all := append([]row{header}, rows...)
	var w [6]int
	for _, r := range all {
		for i, c := range r.cells() {
			w[i] = max(w[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(r row) {
		cells := r.cells()
		var parts []string
		for i, c := range cells {
			if i == len(cells)-1 {
				parts = append(parts, c)
				break
			}
			parts = append(parts, c+strings.Repeat(" ", w[i]-len([]rune(c))))
		}
		b.WriteString(strings.TrimRight(strings.Join(parts, "  "), " "))
		b.WriteByte('\n')
	}
	line(header)
	total := 0
	for _, x := range w {
		total += x
	}
	b.WriteString(strings.Repeat("-", total+2*(len(w)-1)))
	b.WriteByte('\n')
	for _, r := range rows {
		line(r)
		if r.Note != "" {
			for _, l := range strings.Split(r.Note, "\n") {
				b.WriteString(strings.Repeat(" ", w[0]+2) + "  " + l + "\n")
			}
		}
	}
	return b.String()
}

func (r row) cells() [6]string {
	return [6]string{r.ID, r.What, r.Ours, r.Base, r.Ratio, r.N}
}

// target is one of the product's speed claims and whether this run met it.
type target struct {
	Name     string // no spaces
	Measured string // no spaces
	Goal     string // no spaces, e.g. "<=2.0x"
	Met      bool
}

func (t target) String() string {
	verdict := "MISSED"
	if t.Met {
		verdict = "MET"
	}
	return fmt.Sprintf("TARGET %s %s %s %s", nospace(t.Name), nospace(t.Measured), nospace(t.Goal), verdict)
}

func nospace(s string) string {
	if s == "" {
		return "n/a"
	}
	return strings.Join(strings.Fields(s), "_")
}

// atMost builds a target met when measured <= goal. NaN never meets it.
func atMost(name string, measured, goal float64) target {
	return target{Name: name, Measured: fmtRatio(measured), Goal: "<=" + trimRatio(goal), Met: measured <= goal}
}

// atLeast builds a target met when measured >= goal. NaN never meets it.
func atLeast(name string, measured, goal float64) target {
	return target{Name: name, Measured: fmtRatio(measured), Goal: ">=" + trimRatio(goal), Met: measured >= goal}
}

// trimRatio prints a goal such as 2 or 1.25 as "2.0x" or "1.25x".
func trimRatio(g float64) string {
	s := fmt.Sprintf("%.2f", g)
	s = strings.TrimSuffix(s, "0")
	return s + "x"
}

// unmeasured is the line for a target whose row failed: not met.
func unmeasured(name, goal string) target {
	return target{Name: name, Measured: "n/a", Goal: goal}
}
