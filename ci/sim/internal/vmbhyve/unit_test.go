package vmbhyve

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

func TestColumnT(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{name: "pads to widest plus two", lines: []string{"NAME^STATE", "a-long-name^Running (1)"},
			want: "NAME         STATE\na-long-name  Running (1)\n"},
		{name: "empty fields collapse", lines: []string{"A^B^C^D", "x^^^z", "1^2^3^4"},
			want: "A  B  C  D\nx  z\n1  2  3  4\n"},
		{name: "last field never padded", lines: []string{"A^B", "aaaa^b", "c"},
			want: "A     B\naaaa  b\nc\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := columnT(tc.lines, "^"); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestFind(t *testing.T) {
	for _, tc := range []struct {
		mode, user, want, stderr string
		ok                       bool
	}{
		{simstate.Version16, "list", "list", "", true},
		{simstate.Version16, "li", "list", "", true},
		{simstate.Version16, "LIST", "list", "", true},
		{simstate.Version16, "start", "start", "", true},
		{simstate.Version16, "sta", "", "vm: ERROR: ambiguous command 'sta'\n", false},
		{simstate.Version16, "sto", "", "vm: ERROR: ambiguous command 'sto'\n", false},
		{simstate.Version16, "cl", "clone", "", true},
		{simstate.Version16, "de", "destroy", "", true},
		{simstate.Version16, "po", "poweroff", "", true},
		{simstate.Version16, "e", "", "", false},
		{simstate.Version17, "e", "edit", "", true},
		{simstate.Version17, "su", "", "vm: ERROR: ambiguous command 'su'\n", false},
		{simstate.Version16, "", "", "vm: ERROR: no command specified\n", false},
	} {
		t.Run(tc.mode+"/"+tc.user, func(t *testing.T) {
			var errb bytes.Buffer
			v := &vm{cfg: &simstate.Config{VersionMode: tc.mode}, argv0: "vm", stderr: &errb}
			got, ok, _ := v.find(tc.user, v.cmdList())
			if got != tc.want || ok != tc.ok || errb.String() != tc.stderr {
				t.Errorf("find(%q) = %q %v, stderr %q; want %q %v %q", tc.user, got, ok, errb.String(), tc.want, tc.ok, tc.stderr)
			}
		})
	}
}

func TestGenerateMAC(t *testing.T) {
	at := time.Unix(1700000000, 0)
	v16 := &vm{cfg: &simstate.Config{VersionMode: simstate.Version16}, now: func() time.Time { return at }}
	a, msg := v16.generateMAC("ci-1", 0)
	b, _ := v16.generateMAC("ci-1", 0)
	if a != b {
		t.Errorf("1.6 MACs of the same name in the same second differ: %s %s (vm-bhyve collides here)", a, b)
	}
	if msg != "generated static mac "+a+" (based on 'ci-1:0:1700000000:0')" {
		t.Errorf("log %q", msg)
	}
	v17 := &vm{cfg: &simstate.Config{VersionMode: simstate.Version17}, now: time.Now}
	re := regexp.MustCompile(`^58:9c:fc:0[0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$`)
	for _, m := range []string{a, func() string { m, _ := v17.generateMAC("ci-1", 0); return m }()} {
		if !re.MatchString(m) {
			t.Errorf("MAC %s not in 58:9c:fc:0X:XX:XX", m)
		}
	}
}

func TestBytesHuman(t *testing.T) {
	for _, tc := range []struct {
		val      float64
		dec, num int
		want     string
	}{
		{512, 3, 1, "512.000B"},
		{1536, 3, 1, "1.500K"},
		{123456, 1, 2, "120.6M"},
	} {
		if got := bytesHuman(tc.val, tc.dec, tc.num); got != tc.want {
			t.Errorf("bytesHuman(%v,%d,%d) = %s, want %s", tc.val, tc.dec, tc.num, got, tc.want)
		}
	}
}
