package hostmem

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Size is an amount of memory in bytes.
type Size uint64

const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// String is the shortest exact form vm-bhyve's memory= and bhyve(8) -m
// accept: "2G", "1536M"; sizes that are not whole MiB keep a K suffix.
func (s Size) String() string {
	switch {
	case s == 0:
		return "0"
	case s%TiB == 0:
		return strconv.FormatUint(uint64(s/TiB), 10) + "T"
	case s%GiB == 0:
		return strconv.FormatUint(uint64(s/GiB), 10) + "G"
	case s%MiB == 0:
		return strconv.FormatUint(uint64(s/MiB), 10) + "M"
	case s%KiB == 0:
		return strconv.FormatUint(uint64(s/KiB), 10) + "K"
	}
	return strconv.FormatUint(uint64(s), 10)
}

// Human rounds to one decimal for messages about measured figures
// ("3.2G free"), where exactness does not matter.
func (s Size) Human() string {
	f := float64(s)
	for _, u := range []struct {
		unit string
		size Size
	}{{"T", TiB}, {"G", GiB}, {"M", MiB}, {"K", KiB}} {
		if s >= u.size {
			return strconv.FormatFloat(f/float64(u.size), 'f', 1, 64) + u.unit
		}
	}
	return strconv.FormatUint(uint64(s), 10) + "B"
}

// requestRE is what an operator or a job writes: a whole number and a unit,
// M or G, either case. A bare number is refused: bhyve reads it as MiB,
// a reader of .gitlab-ci.yml may read bytes.
var requestRE = regexp.MustCompile(`^([0-9]{1,7})([MmGg])$`)

// SizeExpect describes what ParseSize accepts, for messages.
const SizeExpect = `a whole number with the unit M or G, such as "2G" or "1536M"`

// ParseSize parses a size written as SizeExpect says; zero is refused.
func ParseSize(text string) (Size, error) {
	m := requestRE.FindStringSubmatch(text)
	if m == nil {
		return 0, fmt.Errorf("%q is not a memory size; expected %s", text, SizeExpect)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	if n == 0 {
		return 0, fmt.Errorf("%q is zero; expected %s", text, SizeExpect)
	}
	unit := MiB
	if strings.EqualFold(m[2], "G") {
		unit = GiB
	}
	return Size(n) * unit, nil
}

// confRE is memory= as vm-bhyve passes it to bhyve -m: expand_number(3)
// syntax, a bare number meaning MiB (bhyve(8): "If no suffix is given, the
// value is assumed to be in megabytes").
var confRE = regexp.MustCompile(`^([0-9]{1,13})([KkMmGgTt]?)$`)

// ParseConfMemory reads a template's memory= value.
func ParseConfMemory(text string) (Size, error) {
	m := confRE.FindStringSubmatch(text)
	if m == nil {
		return 0, fmt.Errorf("memory=%q is not a size bhyve accepts (a number with an optional K, M, G or T)", text)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	unit := map[string]Size{"": MiB, "k": KiB, "m": MiB, "g": GiB, "t": TiB}[strings.ToLower(m[2])]
	if n == 0 {
		return 0, fmt.Errorf("memory=%q is zero", text)
	}
	return Size(n) * unit, nil
}
