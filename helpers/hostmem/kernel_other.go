//go:build !freebsd

package hostmem

import "context"

func (kernel) Values(context.Context, ...string) ([]uint64, error) { return nil, errNoKernel }
