package vmbhyve

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bsdColumn does what core::list's `column -ts^` does on FreeBSD (maketbl in
// usr.bin/column): split each line at '^' with wcstok, so empty fields
// vanish; pad every field but a line's last to its column's widest value
// plus two spaces.
func bsdColumn(lines []string) string {
	var rows [][]string
	var widths []int
	for _, line := range lines {
		var row []string
		for _, f := range strings.Split(line, "^") {
			if f != "" {
				row = append(row, f)
			}
		}
		for j, f := range row {
			if j == len(widths) {
				widths = append(widths, 0)
			}
			widths[j] = max(widths[j], len([]rune(f)))
		}
		rows = append(rows, row)
	}
	var b strings.Builder
	for _, row := range rows {
		for j, f := range row {
			b.WriteString(f)
			if j < len(row)-1 {
				b.WriteString(strings.Repeat(" ", widths[j]-len([]rune(f))+2))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

const header16 = "NAME^DATASTORE^LOADER^CPU^MEMORY^VNC^AUTO^STATE"
const headerMaster = "NAME^DATASTORE^LOADER^CPU^MEMORY^VNC^AUTO^STATE^TAGS"

func TestParseList(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want []VM
	}{
		{
			name: "1.6 header, all states",
			out: bsdColumn([]string{
				header16,
				"ci-1^default^bhyveload^2^4G^-^No^Running (4242)",
				"ci-2^default^bhyveload^2^4G^-^No^Locked (buildhost)",
				"ci-3^default^grub^1^512M^-^No^Bootloader (77)",
				"ci-4^default^uefi^4^8G^0.0.0.0:5900^No^Suspended",
				"tmpl^default^uefi^2^4G^-^Yes [1]^Stopped",
			}),
			want: []VM{
				{Name: "ci-1", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateRunning, StateText: "Running (4242)", PID: 4242},
				{Name: "ci-2", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateLocked, StateText: "Locked (buildhost)", LockHost: "buildhost"},
				{Name: "ci-3", Datastore: "default", Loader: "grub", CPU: "1", Memory: "512M", VNC: "-", Auto: "No", State: StateBootloader, StateText: "Bootloader (77)", PID: 77},
				{Name: "ci-4", Datastore: "default", Loader: "uefi", CPU: "4", Memory: "8G", VNC: "0.0.0.0:5900", Auto: "No", State: StateSuspended, StateText: "Suspended"},
				{Name: "tmpl", Datastore: "default", Loader: "uefi", CPU: "2", Memory: "4G", VNC: "-", Auto: "Yes [1]", State: StateStopped, StateText: "Stopped"},
			},
		},
		{
			name: "literal 1.6 output from the research notes",
			out: "NAME  DATASTORE  LOADER     CPU  MEMORY  VNC  AUTO     STATE\n" +
				"ci-1  default    bhyveload  2    4G      -    No       Running (4242)\n" +
				"ci-2  default    bhyveload  2    4G      -    No       Locked (buildhost)\n" +
				"tmpl  default    uefi       2    4G      -    Yes [1]  Stopped\n",
			want: []VM{
				{Name: "ci-1", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateRunning, StateText: "Running (4242)", PID: 4242},
				{Name: "ci-2", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateLocked, StateText: "Locked (buildhost)", LockHost: "buildhost"},
				{Name: "tmpl", Datastore: "default", Loader: "uefi", CPU: "2", Memory: "4G", VNC: "-", Auto: "Yes [1]", State: StateStopped, StateText: "Stopped"},
			},
		},
		{
			name: "master TAGS column after STATE",
			out: bsdColumn([]string{
				headerMaster,
				"ci-1^default^bhyveload^2^4G^-^No^Running (4242)^ci,linux",
				"tmpl^default^uefi^2^4G^-^Yes [12]^Stopped^-",
			}),
			want: []VM{
				{Name: "ci-1", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateRunning, StateText: "Running (4242)", PID: 4242, Tags: "ci,linux"},
				{Name: "tmpl", Datastore: "default", Loader: "uefi", CPU: "2", Memory: "4G", VNC: "-", Auto: "Yes [12]", State: StateStopped, StateText: "Stopped", Tags: "-"},
			},
		},
		{
			name: "long name widens the first column",
			out: bsdColumn([]string{
				header16,
				"x1^default^bhyveload^2^4G^-^No^Stopped",
				strings.Repeat("a", 200) + "^default^bhyveload^2^4G^-^No^Running (1)",
			}),
			want: []VM{
				{Name: "x1", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateStopped, StateText: "Stopped"},
				{Name: strings.Repeat("a", 200), Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateRunning, StateText: "Running (1)", PID: 1},
			},
		},
		{
			name: "empty lock owner",
			out:  bsdColumn([]string{header16, "ci-1^default^none^2^4G^-^No^Locked ()"}),
			want: []VM{{Name: "ci-1", Datastore: "default", Loader: "none", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateLocked, StateText: "Locked ()"}},
		},
		{
			name: "collapsed empty CPU: memory stays memory",
			out: bsdColumn([]string{
				header16,
				"ci-1^default^bhyveload^^4G^-^No^Running (5)",
				"ci-2^default^bhyveload^2^4G^-^No^Stopped",
			}),
			want: []VM{
				{Name: "ci-1", Datastore: "default", Loader: "bhyveload", Memory: "4G", VNC: "-", Auto: "No", State: StateRunning, StateText: "Running (5)", PID: 5},
				{Name: "ci-2", Datastore: "default", Loader: "bhyveload", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateStopped, StateText: "Stopped"},
			},
		},
		{
			name: "collapsed empty MEMORY: a bare number is the CPU count",
			out: bsdColumn([]string{
				headerMaster,
				"ci-1^default^bhyveload^2^^-^Yes [3]^Locked (h)^-",
			}),
			want: []VM{{Name: "ci-1", Datastore: "default", Loader: "bhyveload", CPU: "2", VNC: "-", Auto: "Yes [3]", State: StateLocked, StateText: "Locked (h)", LockHost: "h", Tags: "-"}},
		},
		{
			name: "collapsed empty CPU and MEMORY",
			out:  bsdColumn([]string{header16, "ci-1^default^bhyveload^^^-^No^Stopped"}),
			want: []VM{{Name: "ci-1", Datastore: "default", Loader: "bhyveload", VNC: "-", Auto: "No", State: StateStopped, StateText: "Stopped"}},
		},
		{
			name: "unknown future column and state are kept",
			out:  bsdColumn([]string{"NAME^DATASTORE^LOADER^CPU^MEMORY^VNC^AUTO^STATE^OWNER", "ci-1^default^uefi^2^4G^-^No^Migrating (to b)^alice"}),
			want: []VM{{Name: "ci-1", Datastore: "default", Loader: "uefi", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: "Migrating", StateText: "Migrating (to b)", Extra: map[string]string{"OWNER": "alice"}}},
		},
		{
			name: "verbose columns with right-aligned values",
			out: bsdColumn([]string{
				"NAME^DATASTORE^LOADER^CPU^MEMORY^VNC^AUTO^%CPU^RSZ^UPTIME^STATE",
				"ci-1^default^uefi^2^4G^-^No^  0.5^  512M^      01:02:03^Running (9)",
			}),
			want: []VM{{Name: "ci-1", Datastore: "default", Loader: "uefi", CPU: "2", Memory: "4G", VNC: "-", Auto: "No", State: StateRunning, StateText: "Running (9)", PID: 9,
				Extra: map[string]string{"%CPU": "0.5", "RSZ": "512M", "UPTIME": "01:02:03"}}},
		},
		{
			name: "≤1.4 AUTOSTART header, no guests, blank lines",
			out:  "\nNAME  DATASTORE  LOADER  CPU  MEMORY  VNC  AUTOSTART  STATE\n\n",
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseList([]byte(tt.out))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseListErrors(t *testing.T) {
	tests := []struct {
		name  string
		out   string
		quote string // the offending line, as the error must quote it
	}{
		{name: "empty output", out: "", quote: "no output"},
		{name: "usage text instead of a table", out: "Usage: vm ...\n", quote: `"Usage: vm ..."`},
		{name: "header without STATE", out: "NAME  DATASTORE\n", quote: `"NAME  DATASTORE"`},
		{name: "garbage row", out: bsdColumn([]string{header16}) + "this is not a row at all\n", quote: `"this is not a row at all"`},
		{name: "row with too few fields", out: bsdColumn([]string{header16, "ci-1^default^bhyveload^No^Stopped"}), quote: `ci-1  default    bhyveload  No`},
		{name: "collapsed row that does not fit", out: bsdColumn([]string{header16, "ci-1^default^bhyveload^2^-^Maybe^Stopped"}), quote: `Maybe`},
		{name: "running without pid", out: bsdColumn([]string{header16, "ci-1^default^bhyveload^2^4G^-^No^Running (x)"}), quote: `Running (x)`},
		{name: "locked without owner", out: bsdColumn([]string{header16, "ci-1^default^bhyveload^2^4G^-^No^Locked"}), quote: `Locked"`},
		{name: "control character in a row", out: bsdColumn([]string{header16, "ci-1^default^bhyveload^2^4G^-^No^Stopped\x1b[2J"}), quote: `\x1b[2J`},
		{name: "repeated header column", out: "NAME  STATE  STATE\n", quote: `"NAME  STATE  STATE"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseList([]byte(tt.out))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.quote)
		})
	}
}

func TestVMStopped(t *testing.T) {
	for state, want := range map[State]bool{
		StateStopped: true, StateSuspended: true,
		StateRunning: false, StateLocked: false, StateBootloader: false, "Unknown": false,
	} {
		assert.Equal(t, want, VM{State: state}.Stopped(), state)
	}
}
