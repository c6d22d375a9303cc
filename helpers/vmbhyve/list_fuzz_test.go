package vmbhyve

import (
	"fmt"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzParseList feeds arbitrary bytes to ParseList, which must never panic
// and must only return rows that make sense; then it builds a table from the
// same bytes the way core::list and column(1) would and checks that parsing
// gives back exactly the rows that went in.
func FuzzParseList(f *testing.F) {
	f.Add([]byte(bsdColumn([]string{header16, "ci-1^default^bhyveload^2^4G^-^No^Running (4242)", "tmpl^default^uefi^2^4G^-^Yes [1]^Stopped"})))
	f.Add([]byte(bsdColumn([]string{headerMaster, "ci-1^default^bhyveload^^4G^-^No^Locked (host)^a,b"})))
	f.Add([]byte(bsdColumn([]string{header16, "ci-1^default^bhyveload^^^-^No^Bootloader (7)"})))
	f.Add([]byte("NAME  STATE\n"))
	f.Add([]byte("NAME  DATASTORE\nx\n"))
	f.Add([]byte("\x00\xff^^\n\n  NAME"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, raw []byte) {
		if vms, err := ParseList(raw); err == nil {
			for _, vm := range vms {
				assert.NotEmpty(t, vm.Name)
				assert.NotEmpty(t, vm.State)
				for _, field := range []string{vm.Name, vm.Datastore, vm.Loader, vm.CPU, vm.Memory, vm.VNC, vm.Auto, vm.StateText, vm.Tags} {
					assert.Equal(t, strings.Trim(field, " "), field)
					assert.False(t, strings.ContainsFunc(field, unicode.IsControl), "%q", field)
				}
				assert.Equal(t, vm.PID > 0, vm.State == StateRunning || vm.State == StateBootloader, vm.StateText)
			}
		}

		header, rows, want := tableFrom(raw)
		got, err := ParseList([]byte(bsdColumn(append([]string{header}, rows...))))
		require.NoError(t, err, "table:\n%s", bsdColumn(append([]string{header}, rows...)))
		assert.Equal(t, want, got)
	})
}

// byteStream hands out choices from the fuzzer's bytes, then zeros.
type byteStream []byte

func (b *byteStream) next() int {
	if len(*b) == 0 {
		return 0
	}
	v := (*b)[0]
	*b = (*b)[1:]
	return int(v)
}

func (b *byteStream) pick(options ...string) string { return options[b.next()%len(options)] }

func (b *byteStream) word(alphabet string, minLen, maxLen int) string {
	n := minLen + b.next()%(maxLen-minLen+1)
	var s strings.Builder
	for range n {
		s.WriteByte(alphabet[b.next()%len(alphabet)])
	}
	return s.String()
}

// tableFrom generates what core::list would print (before column(1)) for a
// few guests chosen by raw, and the rows ParseList should return.
func tableFrom(raw []byte) (string, []string, []VM) {
	in := byteStream(raw)
	master := in.next()%2 == 1
	header := header16
	if master {
		header = headerMaster
	}
	var rows []string
	var want []VM
	for range in.next() % 6 {
		vm := VM{
			Name:      in.word("abcdefghijklmnopqrstuvwxyz0123456789._-", 1, 40),
			Datastore: in.pick("default", "ssd", "tank2"),
			Loader:    in.pick("none", "bhyveload", "grub", "uefi", "uefi-csm"),
			CPU:       in.pick("", "1", "2", "16"),
			// vm-bhyve users give memory with a unit; a bare number here
			// would be ambiguous with CPU when CPU is empty (see ParseList).
			Memory: in.pick("", "512M", "4G", "1024M", "64g"),
			VNC:    in.pick("-", "-", "0.0.0.0:5900", "10.0.0.1:5901"),
			Auto:   in.pick("No", "No", "Yes [1]", fmt.Sprintf("Yes [%d]", in.next())),
		}
		switch in.next() % 5 {
		case 0:
			vm.State, vm.PID = StateRunning, 1+in.next()*in.next()
			vm.StateText = fmt.Sprintf("Running (%d)", vm.PID)
		case 1:
			vm.State, vm.PID = StateBootloader, 1+in.next()
			vm.StateText = fmt.Sprintf("Bootloader (%d)", vm.PID)
		case 2:
			vm.State, vm.LockHost = StateLocked, in.word("abcxyz019.-", 0, 30)
			vm.StateText = "Locked (" + vm.LockHost + ")"
		case 3:
			vm.State, vm.StateText = StateSuspended, "Suspended"
		default:
			vm.State, vm.StateText = StateStopped, "Stopped"
		}
		fields := []string{vm.Name, vm.Datastore, vm.Loader, vm.CPU, vm.Memory, vm.VNC, vm.Auto, vm.StateText}
		if master {
			vm.Tags = in.pick("-", "ci", "ci,linux")
			fields = append(fields, vm.Tags)
		}
		rows = append(rows, strings.Join(fields, "^"))
		want = append(want, vm)
	}
	return header, rows, want
}
