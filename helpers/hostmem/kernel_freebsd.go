//go:build freebsd

package hostmem

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// Values reads each variable with sysctlbyname(3). The page counts,
// hw.pagesize and hw.ncpu are 32-bit (u_int/int in vm_meter.c and
// kern_mib.c); hw.physmem is an unsigned long, 64-bit on the 64-bit
// platforms bhyve runs on.
func (kernel) Values(ctx context.Context, names ...string) ([]uint64, error) {
	out := make([]uint64, len(names))
	for i, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if name == PhysMem {
			v, err := unix.SysctlUint64(name)
			if err != nil {
				return nil, fmt.Errorf("sysctl %s: %w", name, err)
			}
			out[i] = v
			continue
		}
		v, err := unix.SysctlUint32(name)
		if err != nil {
			return nil, fmt.Errorf("sysctl %s: %w", name, err)
		}
		out[i] = uint64(v)
	}
	return out, nil
}
