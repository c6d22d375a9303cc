package cron

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin below, whether or not the host has zoneinfo
)

// Monday 15 January 2024 and the days around it anchor the cases; the
// expectations follow upstream's documented syntax (see the package comment)
// and upstream's own policy tests for the kubernetes autoscaler.
func TestContains(t *testing.T) {
	utc := func(day, hour, minute int) time.Time {
		return time.Date(2024, time.January, day, hour, minute, 0, 0, time.UTC)
	}

	tests := []struct {
		period   string
		timezone string
		at       time.Time
		want     bool
	}{
		{"* * * * *", "UTC", utc(20, 3, 17), true},
		{"* 8-17 * * mon-fri", "UTC", utc(15, 10, 0), true},  // Monday morning
		{"* 8-17 * * mon-fri", "UTC", utc(20, 10, 0), false}, // Saturday
		{"* 8-17 * * mon-fri", "UTC", utc(15, 20, 0), false}, // Monday evening
		{"* 8-17 * * mon-fri", "UTC", utc(15, 17, 59), true}, // last minute of the range
		{"* 8-17 * * MON-FRI", "UTC", utc(19, 8, 0), true},   // names in any case
		{"*/15 * * * *", "UTC", utc(15, 9, 45), true},
		{"*/15 * * * *", "UTC", utc(15, 9, 46), false},
		{"5/20 * * * *", "UTC", utc(15, 9, 45), true}, // 5, 25, 45
		{"0,30 * * * *", "UTC", utc(15, 9, 30), true},
		{"0,30 * * * *", "UTC", utc(15, 9, 31), false},
		{"* * * * 0", "UTC", utc(21, 12, 0), true}, // Sunday as 0
		{"* * * * 7", "UTC", utc(21, 12, 0), true}, // Sunday as 7
		{"* * * * 7", "UTC", utc(20, 12, 0), false},
		{"* * * feb *", "UTC", utc(15, 12, 0), false},
		{"* * * jan *", "UTC", utc(15, 12, 0), true},
		// Both day fields restricted: either matching is enough (crontab(5)).
		{"* * 1 * mon", "UTC", utc(15, 12, 0), true}, // a Monday, not the 1st
		{"* * 1 * mon", "UTC", utc(16, 12, 0), false},
		// One restricted, the other a star: the restricted one decides.
		{"* * 15 * *", "UTC", utc(15, 12, 0), true},
		{"* * 15 * *", "UTC", utc(16, 12, 0), false},
		// The period is read in its timezone: 10:00 UTC is 11:00 in Berlin.
		{"* 11 * * *", "Europe/Berlin", utc(15, 10, 0), true},
		{"* 10 * * *", "Europe/Berlin", utc(15, 10, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.period+" "+tt.timezone+" "+tt.at.Format(time.RFC3339), func(t *testing.T) {
			s, err := Parse(tt.period, tt.timezone)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := s.Contains(tt.at); got != tt.want {
				t.Errorf("Contains = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		period, timezone string
		wantInError      string
	}{
		{"invalid", "", "want 5 fields"},
		{"* * * *", "", "want 5 fields"},
		{"60 * * * *", "", "minute field"},
		{"* 24 * * *", "", "hour field"},
		{"* * 0 * *", "", "day of month field"},
		{"* * * 13 *", "", "month field"},
		{"* * * * 8", "", "day of week field"},
		{"* * * * funday", "", "neither a number nor a name"},
		{"* 17-8 * * *", "", "runs backwards"},
		{"*/0 * * * *", "", "not a positive number"},
		{"* * * * *", "Mars/Olympus_Mons", "timezone"},
	}
	for _, tt := range tests {
		t.Run(tt.period+" "+tt.timezone, func(t *testing.T) {
			_, err := Parse(tt.period, tt.timezone)
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if !strings.Contains(err.Error(), tt.wantInError) || !strings.Contains(err.Error(), tt.period) {
				t.Errorf("error %q should name the period and contain %q", err, tt.wantInError)
			}
		})
	}
}

func TestZeroScheduleMatchesNothing(t *testing.T) {
	if (Schedule{}).Contains(time.Now()) {
		t.Error("the zero Schedule matched")
	}
}
