package jobvm

import (
	"context"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// SysctlSource is where the settings say the host's sysctl variables are
// read: the kernel itself, or sysctl_command (the simulated host's).
func SysctlSource(s *settings.Settings) hostmem.Source {
	if len(s.SysctlCommand) == 0 {
		return hostmem.Kernel()
	}
	return hostmem.Command{Argv: s.SysctlCommand, Run: vmbhyve.ExecCommander{}}
}

// sysctlGauge is the host's free memory as hostmem computes it.
type sysctlGauge struct{ src hostmem.Source }

func (g sysctlGauge) FreeMemory(ctx context.Context) (hostmem.Size, error) {
	n, err := hostmem.Free(ctx, g.src)
	return hostmem.Size(n), err
}

// limits are the settings' bounds on job VM sizes.
func limits(s *settings.Settings) Limits {
	return Limits{MaxCPUs: s.MaxCPUs, MaxMemory: s.MaxMemory, Reserve: s.MemoryReserve, Where: s.Where}
}
