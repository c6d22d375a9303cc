package vmbhyve

import (
	"fmt"
	"regexp"
)

// jobName is vm-bhyve's util::check_name rule for FreeBSD 13+ (lib/vm-util),
// lower case only and without '.': vm-bhyve interpolates the name into
// `pgrep -fx "bhyve: NAME"` (core::stop), where '.' is a regex wildcard that
// could make `vm stop ci.1` signal ci-1 as well. The first character cannot
// be '-', so a name never reads as an option.
var jobName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,229}[a-z0-9]$`)

// templateName is util::check_name as vm-bhyve applies it (egrep -i, dots
// allowed). Templates are only ever the source of `vm clone TMPL@SNAP`, which
// does not go through pgrep, so an operator's "freebsd-14.1" stays usable.
var templateName = regexp.MustCompile(`^[A-Za-z0-9][.A-Za-z0-9_-]{0,229}[A-Za-z0-9]$`)

// snapshotName is what zfs(8) accepts in a snapshot component, minus a
// leading '-' (an option to vm) and anything with '@' or '/'.
var snapshotName = regexp.MustCompile(`^[A-Za-z0-9_.:][A-Za-z0-9_.:-]{0,254}$`)

// ValidName reports whether name is acceptable for a VM this package creates,
// starts, stops or destroys.
func ValidName(name string) error {
	if !jobName.MatchString(name) {
		return fmt.Errorf("invalid VM name %q: want 2-231 characters of a-z, 0-9, '_' and '-', starting and ending with a letter or digit (no '.': vm-bhyve uses the name as a pgrep regex)", name)
	}
	return nil
}

func validTemplate(name string) error {
	if !templateName.MatchString(name) {
		return fmt.Errorf("invalid template name %q: want 2-231 characters of letters, digits, '.', '_' and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

func validSnapshot(name string) error {
	if !snapshotName.MatchString(name) {
		return fmt.Errorf("invalid snapshot name %q: want letters, digits, '_', '.', ':' and '-', not starting with '-'", name)
	}
	return nil
}
