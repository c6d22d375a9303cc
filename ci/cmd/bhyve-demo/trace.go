package main

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// traceLine is one line of a job log as upstream 19.x writes it:
// "2026-12-01T08:54:29.664937Z 00O+text", a timestamp, a stream number, O
// or E, and '+' when the text continues the previous line.
type traceLine struct {
	at   time.Time
	text string
}

type section struct {
	name       string
	start, end time.Time
}

type trace struct {
	lines    []traceLine
	sections []section
}

var (
	linePrefix = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT[0-9:.]+Z) [0-9a-f]{2}[OE]([ +])(.*)$`)
	marker     = regexp.MustCompile(`section_(start|end):\d+:([a-z0-9_]+)(\[[^\]]*\])?\r?\x1b\[0K`)
	eraseLine  = regexp.MustCompile("\x1b\\[0K")
)

func parseTrace(raw string) trace {
	var tr trace
	open := map[string]int{}
	for _, l := range strings.Split(strings.TrimRight(raw, "\n"), "\n") {
		m := linePrefix.FindStringSubmatch(strings.TrimRight(l, "\r"))
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		text := m[3]
		for _, sm := range marker.FindAllStringSubmatch(text, -1) {
			switch sm[1] {
			case "start":
				open[sm[2]] = len(tr.sections)
				tr.sections = append(tr.sections, section{name: sm[2], start: at})
			case "end":
				if i, ok := open[sm[2]]; ok {
					tr.sections[i].end = at
				}
			}
		}
		text = testbed.Plain(eraseLine.ReplaceAllString(marker.ReplaceAllString(text, ""), ""))
		if m[2] == "+" && len(tr.lines) > 0 {
			tr.lines[len(tr.lines)-1].text += text
			continue
		}
		tr.lines = append(tr.lines, traceLine{at: at, text: text})
	}
	// Lines that held only section markers show nothing on GitLab's page.
	kept := tr.lines[:0]
	for _, l := range tr.lines {
		if l.text != "" {
			kept = append(kept, l)
		}
	}
	tr.lines = kept
	return tr
}

// render prints the log as GitLab's job page shows it: no timestamps, no
// section markers, one heading per section.
func (tr trace) render() string {
	var b strings.Builder
	for _, l := range tr.lines {
		fmt.Fprintf(&b, "    %s\n", l.text)
	}
	return b.String()
}

func (tr trace) section(name string) (section, bool) {
	for _, s := range tr.sections {
		if s.name == name {
			return s, true
		}
	}
	return section{}, false
}

// scriptLines are the log lines of the job's own script.
func (tr trace) scriptLines() []traceLine {
	s, ok := tr.section("step_script")
	if !ok {
		return nil
	}
	var out []traceLine
	for _, l := range tr.lines {
		if l.at.After(s.start) && !l.at.After(s.end) && !strings.HasPrefix(l.text, "Executing \"step_script\"") {
			out = append(out, l)
		}
	}
	return out
}

type timeline struct {
	toFirstLine, lastLineToEnd, total time.Duration
	cleanup                           time.Duration // last section's end -> "Job succeeded"
}

func (tr trace) timeline(rec gitlab.JobRecord) timeline {
	var tl timeline
	if script := tr.scriptLines(); len(script) > 0 {
		tl.toFirstLine = script[0].at.Sub(rec.ReceivedAt)
		tl.lastLineToEnd = rec.FinishedAt.Sub(script[len(script)-1].at)
	}
	tl.total = rec.FinishedAt.Sub(rec.ReceivedAt)
	if n := len(tr.sections); n > 0 && len(tr.lines) > 0 {
		tl.cleanup = tr.lines[len(tr.lines)-1].at.Sub(tr.sections[n-1].end)
	}
	return tl
}

var readyLine = regexp.MustCompile(`is ready: \S+ \(([^)]*)\)`)

func (tl timeline) report(tr trace) string {
	var b strings.Builder
	for _, s := range tr.sections {
		fmt.Fprintf(&b, "    %-28s %10s\n", s.name, ms(s.end.Sub(s.start)))
		if s.name != "prepare_executor" {
			continue
		}
		for _, l := range tr.lines {
			if m := readyLine.FindStringSubmatch(l.text); m != nil {
				for _, part := range strings.Split(m[1], ", ") {
					name, took, _ := strings.Cut(part, " ")
					fmt.Fprintf(&b, "      %-26s %10s\n", name, took)
				}
			}
		}
	}
	fmt.Fprintf(&b, "    %-28s %10s\n", "cleanup (VM powered off)", ms(tl.cleanup))
	fmt.Fprintf(&b, "    %-28s %10s\n", "received -> first line", ms(tl.toFirstLine))
	fmt.Fprintf(&b, "    %-28s %10s\n", "last line -> GitLab told", ms(tl.lastLineToEnd))
	fmt.Fprintf(&b, "    %-28s %10s\n", "total", ms(tl.total))
	return b.String()
}

func listNames(vmList string) []string {
	var names []string
	for i, line := range strings.Split(strings.TrimSpace(vmList), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}
