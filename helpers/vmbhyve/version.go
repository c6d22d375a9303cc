package vmbhyve

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// VersionInfo is vm-bhyve's version as util::version (lib/vm-util) prints it:
//
//	vm-bhyve: Bhyve virtual machine management v1.6-devel (rev. 106001)   ≤1.6 (and churchers master)
//	vm-bhyve: Bhyve virtual machine management v1.7.5                     freebsd/vm-bhyve 1.7.0+
//	vm-bhyve: Bhyve virtual machine management v1.8-devel                 freebsd master
//
// Caution: freebsd/vm-bhyve master between August and November 2025 already
// returned failure counts from `vm start` while still calling itself
// "1.6-devel (rev. 106001)", so the version cannot prove how `vm start`
// exits. Start therefore never relies on the exit status.
type VersionInfo struct {
	Major, Minor, Patch int
	Pre                 string // "devel" in "1.6-devel"
	Rev                 int    // VERSION_INT, printed up to 1.6; 0 when absent
	text                string // as printed after the "v"
}

var versionLine = regexp.MustCompile(`(?:management v|^v?)(([0-9]+)\.([0-9]+)(?:\.([0-9]+))?(?:-([0-9A-Za-z.]+))?)(?: \(rev\. ([0-9]+)\))?`)

// ParseVersion reads the output of `vm version`, or a version string as
// Driver.Version returns it.
func ParseVersion(out string) (VersionInfo, error) {
	m := versionLine.FindStringSubmatch(out)
	if m == nil {
		return VersionInfo{}, fmt.Errorf("unrecognised version output %q", clip(strings.TrimSpace(out)))
	}
	v := VersionInfo{text: m[1], Pre: m[5]}
	v.Major, _ = strconv.Atoi(m[2])
	v.Minor, _ = strconv.Atoi(m[3])
	if m[4] != "" {
		v.Patch, _ = strconv.Atoi(m[4])
	}
	if m[6] != "" {
		v.Rev, _ = strconv.Atoi(m[6])
	}
	return v, nil
}

// String is the version as vm-bhyve printed it, e.g. "1.7.5".
func (v VersionInfo) String() string { return v.text }

// AtLeast reports whether v is major.minor or later; a pre-release such as
// "1.7-devel" counts as its own major.minor.
func (v VersionInfo) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}
