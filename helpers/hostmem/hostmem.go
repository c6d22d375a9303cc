// Package hostmem reads the bhyve host's memory and CPU figures from
// sysctl(8) variables: what admission control compares a VM's size with,
// and what doctor compares the resource settings with.
//
// Figures (sys/vm/vm_meter.c, sys/kern/kern_mib.c): page counts
// vm.stats.vm.v_free_count and v_inactive_count, hw.pagesize in bytes,
// hw.physmem in bytes, hw.ncpu.
package hostmem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The variables read, by their sysctl names.
const (
	FreePages     = "vm.stats.vm.v_free_count"
	InactivePages = "vm.stats.vm.v_inactive_count"
	PageSize      = "hw.pagesize"
	PhysMem       = "hw.physmem"
	NCPU          = "hw.ncpu"
)

// Source reads numeric sysctl variables, in the order asked.
type Source interface {
	Values(ctx context.Context, names ...string) ([]uint64, error)
}

// Free is the memory a new VM can take without the kernel writing anything
// to swap: free pages plus inactive pages (clean cache the page daemon
// hands out on demand; dirty pages sit in the laundry queue since FreeBSD
// 11). ZFS's ARC is wired and not counted: it shrinks only under pressure.
func Free(ctx context.Context, src Source) (uint64, error) {
	v, err := src.Values(ctx, FreePages, InactivePages, PageSize)
	if err != nil {
		return 0, fmt.Errorf("read the host's free memory: %w", err)
	}
	return (v[0] + v[1]) * v[2], nil
}

// Host is what doctor compares the resource settings with.
type Host struct {
	PhysMem uint64 // bytes
	NCPU    int
	Free    uint64 // bytes, as Free computes it
}

// ReadHost reads the host's totals and its free memory now.
func ReadHost(ctx context.Context, src Source) (Host, error) {
	v, err := src.Values(ctx, PhysMem, NCPU, FreePages, InactivePages, PageSize)
	if err != nil {
		return Host{}, fmt.Errorf("read the host's memory and CPUs: %w", err)
	}
	return Host{PhysMem: v[0], NCPU: int(v[1]), Free: (v[2] + v[3]) * v[4]}, nil
}

// Commander runs one program without a shell (helpers/vmbhyve's
// ExecCommander).
type Commander interface {
	Run(ctx context.Context, argv []string) (stdout, stderr []byte, err error)
}

// Command reads the variables with `ARGV -n NAME...`, for hosts whose
// kernel this process cannot ask itself (the simulated host). FreeBSD's
// sysctl(8) with -n prints each value alone on its own line, in the order
// of the arguments.
type Command struct {
	Argv []string
	Run  Commander
}

func (c Command) Values(ctx context.Context, names ...string) ([]uint64, error) {
	argv := append(append(append([]string(nil), c.Argv...), "-n"), names...)
	stdout, stderr, err := c.Run.Run(ctx, argv)
	if err != nil {
		if msg := strings.TrimSpace(string(stderr)); msg != "" {
			return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
		}
		return nil, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return parseValues(stdout, names)
}

func parseValues(out []byte, names []string) ([]uint64, error) {
	lines := strings.Split(string(bytes.TrimRight(out, "\n")), "\n")
	if len(lines) != len(names) {
		return nil, fmt.Errorf("sysctl printed %d line(s) for %d variable(s) (%s): %q", len(lines), len(names), strings.Join(names, " "), out)
	}
	vals := make([]uint64, len(names))
	for i, l := range lines {
		n, err := strconv.ParseUint(strings.TrimSpace(l), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("sysctl %s: %q is not a number", names[i], l)
		}
		vals[i] = n
	}
	return vals, nil
}

// Kernel asks the running kernel directly (FreeBSD only; elsewhere every
// read fails with errNoKernel).
func Kernel() Source { return kernel{} }

type kernel struct{}

var errNoKernel = errors.New("reading FreeBSD sysctl variables from the kernel needs FreeBSD; set sysctl_command to a sysctl(8) that prints them")
