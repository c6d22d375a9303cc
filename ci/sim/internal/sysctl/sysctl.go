// Package sysctl is the simulated host's sysctl(8), for the read-only
// numeric variables the executor reads: memory and CPU figures. Values live
// in a JSON file a test rewrites (Store) to make the host's free memory
// whatever it needs.
//
// Behaviour follows FreeBSD's sbin/sysctl/sysctl.c: `name: value` lines, or
// the value alone with -n, one line per argument in argument order; an
// unknown name is warned about as "sysctl: unknown oid 'NAME'" and the rest
// are still printed, the exit status is 1 if any warning was printed;
// assigning to a read-only variable prints "sysctl: oid 'NAME' is read
// only"; no name and no -a is the usage message, exit 1.
package sysctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// Defaults describe a 16 GiB, 8-CPU amd64 host with 12 GiB free: page
// size 4096 as on amd64 and arm64 (hw.pagesize, PAGE_SIZE), physmem in
// bytes, page counts in pages.
func Defaults() map[string]uint64 {
	const page = 4096
	return map[string]uint64{
		"hw.pagesize":                  page,
		"hw.physmem":                   16 << 30,
		"hw.ncpu":                      8,
		"vm.stats.vm.v_page_count":     16 << 30 / page,
		"vm.stats.vm.v_free_count":     12 << 30 / page,
		"vm.stats.vm.v_inactive_count": 0,
		"vm.stats.vm.v_laundry_count":  0,
		"vm.stats.vm.v_active_count":   3 << 30 / page,
		"vm.stats.vm.v_wire_count":     1 << 30 / page,
	}
}

// Load reads the values file, the defaults if there is none yet.
func Load(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Defaults(), nil
	}
	if err != nil {
		return nil, err
	}
	v := map[string]uint64{}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// Store writes the values file atomically: a sysctl running meanwhile sees
// the old values or the new ones.
func Store(path string, v map[string]uint64) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return simstate.WriteFileAtomic(path, append(b, '\n'), 0o644)
}

const usage = "usage: sysctl [-bdehiNnoqTtWx] [ -B <bufsize> ] [-f filename] name[=value] ...\n       sysctl [-bdehNnoqTtWx] [ -B <bufsize> ] -a\n"

// Main runs `sysctl ARGS` against the values file and returns the exit
// status.
func Main(path string, args []string, stdout, stderr io.Writer) int {
	noName, all := false, false
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && len(args[0]) > 1 {
		for _, f := range args[0][1:] {
			switch f {
			case 'n':
				noName = true
			case 'a':
				all = true
			default:
				fmt.Fprintf(stderr, "sysctl: illegal option -- %c\n%s", f, usage)
				return 1
			}
		}
		args = args[1:]
	}
	vals, err := Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "sysctl: %v\n", err)
		return 1
	}
	if all {
		args = args[:0]
		for name := range vals {
			args = append(args, name)
		}
		sort.Strings(args)
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 1
	}
	warnings := 0
	for _, a := range args {
		name, _, assign := strings.Cut(a, "=")
		v, ok := vals[name]
		switch {
		case !ok:
			fmt.Fprintf(stderr, "sysctl: unknown oid '%s'\n", name)
			warnings++
		case assign:
			fmt.Fprintf(stderr, "sysctl: oid '%s' is read only\n", name)
			warnings++
		case noName:
			fmt.Fprintln(stdout, strconv.FormatUint(v, 10))
		default:
			fmt.Fprintf(stdout, "%s: %d\n", name, v)
		}
	}
	if warnings > 0 {
		return 1
	}
	return 0
}
