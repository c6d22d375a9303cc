// Package cron is a sandbox stand-in for gitlab.com/gitlab-org/fleeting/taskscaler/cron,
// which upstream's kubernetes executor uses for the periods of its pause-pod
// autoscaler policies. Unlike the rest of this stand-in module it is a real,
// working implementation: the kubernetes executor does run in a sandbox build,
// and a policy that silently never (or always) matched would change how many
// pods it keeps. See ../README.md.
//
// The syntax is the one upstream documents for `periods`
// (docs/executors/kubernetes/_index.md, "Cron syntax"): five fields, minute
// (0-59), hour (0-23), day of month (1-31), month (1-12) and day of week (0-7,
// 0 and 7 both Sunday, or MON-SUN), each `*`, a value, a range `a-b`, any of
// these with a step `/n`, or a comma-separated list of them. As in crontab(5),
// when both day fields are restricted a day matches if either matches.
package cron

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed period.
type Schedule struct {
	loc     *time.Location
	minute  bitset
	hour    bitset
	dom     bitset
	month   bitset
	dow     bitset
	domStar bool
	dowStar bool
}

type bitset uint64

func (b bitset) has(n int) bool { return b&(1<<uint(n)) != 0 }

type field struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	minuteField = field{name: "minute", min: 0, max: 59}
	hourField   = field{name: "hour", min: 0, max: 23}
	domField    = field{name: "day of month", min: 1, max: 31}
	monthField  = field{name: "month", min: 1, max: 12, names: map[string]int{
		"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	}}
	// 7 is accepted as Sunday and folded onto 0 after parsing.
	dowField = field{name: "day of week", min: 0, max: 7, names: map[string]int{
		"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
	}}
)

// Parse parses a five-field cron period evaluated in timezone (an IANA name
// such as "Europe/Berlin"; empty means the host's local time, as upstream
// documents for `timezone`).
func Parse(period, timezone string) (Schedule, error) {
	loc := time.Local
	if timezone != "" {
		l, err := time.LoadLocation(timezone)
		if err != nil {
			return Schedule{}, fmt.Errorf("cron period %q: timezone: %w", period, err)
		}
		loc = l
	}

	parts := strings.Fields(period)
	if len(parts) != 5 {
		return Schedule{}, fmt.Errorf("cron period %q: want 5 fields (minute hour day-of-month month day-of-week), got %d", period, len(parts))
	}

	s := Schedule{loc: loc}
	targets := []struct {
		f    field
		set  *bitset
		star *bool
	}{
		{minuteField, &s.minute, nil},
		{hourField, &s.hour, nil},
		{domField, &s.dom, &s.domStar},
		{monthField, &s.month, nil},
		{dowField, &s.dow, &s.dowStar},
	}
	for i, t := range targets {
		set, err := t.f.parse(parts[i])
		if err != nil {
			return Schedule{}, fmt.Errorf("cron period %q: %w", period, err)
		}
		*t.set = set
		if t.star != nil {
			*t.star = strings.HasPrefix(parts[i], "*")
		}
	}
	if s.dow.has(7) {
		s.dow = s.dow&^(1<<7) | 1
	}
	return s, nil
}

func (f field) parse(expr string) (bitset, error) {
	var set bitset
	for _, item := range strings.Split(expr, ",") {
		lo, hi, step, err := f.parseItem(item)
		if err != nil {
			return 0, fmt.Errorf("%s field %q: %w", f.name, expr, err)
		}
		for n := lo; n <= hi; n += step {
			set |= 1 << uint(n)
		}
	}
	return set, nil
}

func (f field) parseItem(item string) (lo, hi, step int, err error) {
	rng, stepText, hasStep := strings.Cut(item, "/")
	step = 1
	if hasStep {
		step, err = strconv.Atoi(stepText)
		if err != nil || step < 1 {
			return 0, 0, 0, fmt.Errorf("step %q is not a positive number", stepText)
		}
	}

	switch {
	case rng == "*":
		return f.min, f.max, step, nil
	case strings.Contains(rng, "-"):
		a, b, _ := strings.Cut(rng, "-")
		if lo, err = f.value(a); err != nil {
			return 0, 0, 0, err
		}
		if hi, err = f.value(b); err != nil {
			return 0, 0, 0, err
		}
		if lo > hi {
			return 0, 0, 0, fmt.Errorf("range %q runs backwards", rng)
		}
		return lo, hi, step, nil
	default:
		if lo, err = f.value(rng); err != nil {
			return 0, 0, 0, err
		}
		// "5/15" means from 5 to the end in steps of 15, as in Vixie cron.
		if hasStep {
			return lo, f.max, step, nil
		}
		return lo, lo, 1, nil
	}
}

func (f field) value(text string) (int, error) {
	if n, ok := f.names[strings.ToLower(text)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(text)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a number nor a name", text)
	}
	if n < f.min || n > f.max {
		return 0, fmt.Errorf("%d is outside %d-%d", n, f.min, f.max)
	}
	return n, nil
}

// Contains reports whether t falls in a minute the period matches, read in
// the period's timezone.
func (s Schedule) Contains(t time.Time) bool {
	if s.loc == nil {
		// The zero Schedule matches nothing rather than everything.
		return false
	}
	t = t.In(s.loc)
	if !s.minute.has(t.Minute()) || !s.hour.has(t.Hour()) || !s.month.has(int(t.Month())) {
		return false
	}
	domOK := s.dom.has(t.Day())
	dowOK := s.dow.has(int(t.Weekday()))
	if s.domStar || s.dowStar {
		return domOK && dowOK
	}
	return domOK || dowOK
}
