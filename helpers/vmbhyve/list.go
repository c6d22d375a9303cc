package vmbhyve

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// State is the first word of vm list's STATE column. Unknown words from
// future versions are kept as they are.
type State string

// The states vm::running_check (lib/vm-run) and core::list (lib/vm-core)
// produce.
const (
	StateRunning    State = "Running"    // "Running (PID)": a "bhyve: NAME" process exists
	StateBootloader State = "Bootloader" // "Bootloader (PID)": bhyveload or grub-bhyve runs
	StateStopped    State = "Stopped"
	StateLocked     State = "Locked"    // "Locked (HOST)": NAME/run.lock exists but no process
	StateSuspended  State = "Suspended" // [1.7+] saved state on disk, no process
)

// VM is one row of `vm list`.
type VM struct {
	Name, Datastore, Loader, CPU, Memory, VNC, Auto, Tags string

	State     State
	StateText string // the whole STATE column, e.g. "Running (4242)"
	PID       int    // for Running and Bootloader
	LockHost  string // for Locked: line 1 of run.lock, may be empty

	// Extra holds columns this package does not know, by header name.
	Extra map[string]string
}

// Stopped reports whether no bhyve or loader process exists and no run.lock
// is left: the state in which vm-bhyve lets the guest be destroyed.
func (v VM) Stopped() bool { return v.State == StateStopped || v.State == StateSuspended }

// listRow is how a header word maps onto VM. AUTOSTART is the ≤1.4 name.
var listColumns = map[string]func(*VM) *string{
	"NAME":      func(v *VM) *string { return &v.Name },
	"DATASTORE": func(v *VM) *string { return &v.Datastore },
	"LOADER":    func(v *VM) *string { return &v.Loader },
	"CPU":       func(v *VM) *string { return &v.CPU },
	"MEMORY":    func(v *VM) *string { return &v.Memory },
	"VNC":       func(v *VM) *string { return &v.VNC },
	"AUTO":      func(v *VM) *string { return &v.Auto },
	"AUTOSTART": func(v *VM) *string { return &v.Auto },
	"STATE":     func(v *VM) *string { return &v.StateText },
	"TAGS":      func(v *VM) *string { return &v.Tags },
}

type column struct {
	name  string
	start int // in runes
}

// ParseList parses the output of `vm list` (core::list in lib/vm-core).
//
// core::list prints "^"-separated fields through FreeBSD's `column -ts^`,
// which pads every field but a row's last to the column's widest value plus
// two spaces. Fields therefore start at the header's offsets, and AUTO
// ("Yes [1]") and STATE ("Running (42)") may contain single spaces, so rows
// are cut at the header's offsets rather than split on blanks. Columns are
// found by name, so the master branch's TAGS column (after STATE) and any
// future column are tolerated; unknown ones land in VM.Extra.
//
// `column` splits with wcstok, so an empty field vanishes and the fields
// after it move one column left: such a row is shorter than the header.
// core::list prints every field with a default except CPU and MEMORY
// (config::get without one), so a short row is read as missing CPU and/or
// MEMORY: the fields before CPU stay in place, the fields after MEMORY are
// aligned from the right, and a single leftover value counts as CPU if it is
// all digits and as MEMORY otherwise. Such rows must then have an AUTO of
// "No" or "Yes [n]", or the guess is rejected.
//
// Anything else that does not fit (a field crossing a column boundary, a
// missing header, too few fields, a bad PID, a control character) is an
// error quoting the line.
// Widths are counted in runes, as column(1) does for single-width text.
func ParseList(out []byte) ([]VM, error) {
	lines := strings.Split(string(out), "\n")
	var cols []column
	headerAt := -1
	for i, line := range lines {
		if strings.TrimSpace(line) == "" {
			continue
		}
		h, err := parseHeader(line)
		if err != nil {
			return nil, fmt.Errorf("vm list: line %d: %w: %q", i+1, err, line)
		}
		cols, headerAt = h, i
		break
	}
	if headerAt < 0 {
		return nil, fmt.Errorf("vm list: no output, expected a header starting with NAME")
	}

	var vms []VM
	for i := headerAt + 1; i < len(lines); i++ {
		line := lines[i]
		if strings.TrimSpace(line) == "" {
			continue
		}
		vm, err := parseRow(cols, line)
		if err != nil {
			return nil, fmt.Errorf("vm list: line %d: %w: %q", i+1, err, line)
		}
		vms = append(vms, vm)
	}
	return vms, nil
}

// parseHeader finds the column names and where they start. Names are split at
// runs of two or more spaces, the least padding column(1) ever writes.
func parseHeader(line string) ([]column, error) {
	rs := []rune(strings.TrimRight(line, " \r"))
	if i := slices.IndexFunc(rs, unicode.IsControl); i >= 0 {
		return nil, fmt.Errorf("control character %q at column %d", rs[i], i+1)
	}
	var cols []column
	for i := 0; i < len(rs); {
		if rs[i] == ' ' {
			i++
			continue
		}
		start := i
		for i < len(rs) && !(rs[i] == ' ' && (i+1 >= len(rs) || rs[i+1] == ' ')) {
			i++
		}
		cols = append(cols, column{name: string(rs[start:i]), start: start})
	}
	if len(cols) == 0 || cols[0].name != "NAME" || cols[0].start != 0 {
		return nil, fmt.Errorf("header does not start with NAME")
	}
	seen := map[string]bool{}
	for _, c := range cols {
		if seen[c.name] {
			return nil, fmt.Errorf("header repeats column %s", c.name)
		}
		seen[c.name] = true
	}
	if !seen["STATE"] {
		return nil, fmt.Errorf("header has no STATE column")
	}
	return cols, nil
}

var autoValue = regexp.MustCompile(`^(No|Yes \[[0-9]+\])$`)

func parseRow(cols []column, line string) (VM, error) {
	rs := []rune(strings.TrimRight(line, "\r"))
	// Nothing core::list prints holds control characters; one in a field
	// would reach log lines and comparisons verbatim.
	if i := slices.IndexFunc(rs, unicode.IsControl); i >= 0 {
		return VM{}, fmt.Errorf("control character %q at column %d", rs[i], i+1)
	}
	fields := make([]string, len(cols))
	present := 0
	for j, c := range cols {
		if c.start >= len(rs) {
			break
		}
		// column(1) pads with at least two spaces, so a field that runs
		// into the next column's first two cells is not column output.
		if j > 0 && (rs[c.start-1] != ' ' || rs[c.start-2] != ' ') {
			return VM{}, fmt.Errorf("text crosses into column %s", c.name)
		}
		end := len(rs)
		if j+1 < len(cols) && cols[j+1].start < end {
			end = cols[j+1].start
		}
		fields[j] = strings.Trim(string(rs[c.start:end]), " ")
		if fields[j] != "" {
			present = j + 1
		}
	}
	for j := 0; j < present; j++ {
		if fields[j] == "" {
			return VM{}, fmt.Errorf("column %s is blank", cols[j].name)
		}
	}

	collapsed := present < len(cols)
	if collapsed {
		var err error
		if fields, err = uncollapse(cols, fields[:present]); err != nil {
			return VM{}, err
		}
	}

	var vm VM
	for j, c := range cols {
		if set, ok := listColumns[c.name]; ok {
			*set(&vm) = fields[j]
			continue
		}
		if vm.Extra == nil {
			vm.Extra = map[string]string{}
		}
		vm.Extra[c.name] = fields[j]
	}
	if collapsed && hasColumn(cols, "AUTO") && !autoValue.MatchString(vm.Auto) {
		return VM{}, fmt.Errorf("row has %d of %d fields and no reading of it gives a valid AUTO", present, len(cols))
	}
	if err := parseState(&vm); err != nil {
		return VM{}, err
	}
	return vm, nil
}

func hasColumn(cols []column, name string) bool {
	for _, c := range cols {
		if c.name == name {
			return true
		}
	}
	return false
}

// uncollapse puts the fields of a short row back under their headers,
// assuming only CPU and MEMORY can be empty (see ParseList).
func uncollapse(cols []column, got []string) ([]string, error) {
	cpu, mem := -1, -1
	for j, c := range cols {
		switch c.name {
		case "CPU":
			cpu = j
		case "MEMORY":
			mem = j
		}
	}
	missing := len(cols) - len(got)
	if cpu < 0 || mem < 0 || mem != cpu+1 || missing > 2 || len(got) < cpu+len(cols)-mem-1 {
		return nil, fmt.Errorf("row has %d fields, header has %d", len(got), len(cols))
	}
	out := make([]string, len(cols))
	copy(out[:cpu], got[:cpu])
	tail := len(cols) - mem - 1
	copy(out[mem+1:], got[len(got)-tail:])
	if missing == 1 {
		v := got[cpu]
		if isDigits(v) {
			out[cpu] = v
		} else {
			out[mem] = v
		}
	}
	return out, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// parseState splits "Word (detail)" as printed by vm::running_check and
// core::list: a PID for Running and Bootloader, run.lock's first line for
// Locked.
func parseState(vm *VM) error {
	word, rest, _ := strings.Cut(vm.StateText, " ")
	vm.State = State(word)
	detail, hasDetail := "", false
	if rest != "" {
		if strings.HasPrefix(rest, "(") && strings.HasSuffix(rest, ")") {
			detail, hasDetail = rest[1:len(rest)-1], true
		}
	}
	switch vm.State {
	case StateRunning, StateBootloader:
		pid, err := strconv.Atoi(detail)
		if !hasDetail || err != nil || pid <= 0 {
			return fmt.Errorf("state %q has no valid PID", vm.StateText)
		}
		vm.PID = pid
	case StateLocked:
		if !hasDetail {
			return fmt.Errorf("state %q has no lock owner", vm.StateText)
		}
		vm.LockHost = detail
	}
	return nil
}
