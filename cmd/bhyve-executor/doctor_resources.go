package main

import (
	"context"
	"fmt"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
)

// doctorResources compares the resource settings with the host: caps the
// host could never satisfy, and whether a VM of the template's size is
// admitted right now.
func doctorResources(ctx context.Context, c *checks, s *settings.Settings, h *jobvm.Host) {
	host, err := hostmem.ReadHost(ctx, jobvm.SysctlSource(s))
	if err != nil {
		c.fail("host memory", err.Error(), "on FreeBSD leave sysctl_command = [] (the kernel is asked directly), or point it at a sysctl(8) that prints hw.physmem, hw.ncpu and vm.stats.vm.v_free_count with -n")
		return
	}
	c.ok("host memory", "%s physical, %s free, %d CPUs", hostmem.Size(host.PhysMem).Human(), hostmem.Size(host.Free).Human(), host.NCPU)

	size, err := h.Manager(s, "", "").Size()
	if err != nil {
		c.fail("VM size", err.Error(), fmt.Sprintf("give template %s a cpu= and memory= in its conf (vm configure %s)", s.Template, s.Template))
		return
	}
	maxCPUs, cpusFrom := s.MaxCPUs, s.Where("max_cpus")
	if maxCPUs == 0 {
		maxCPUs, cpusFrom = size.CPUs, "the template's cpu, max_cpus being unset"
	}
	maxMem, memFrom := s.MaxMemory, s.Where("max_memory")
	if maxMem == 0 {
		maxMem, memFrom = size.Memory, "the template's memory, max_memory being unset"
	}
	phys := hostmem.Size(host.PhysMem)
	ok := true
	if maxCPUs > host.NCPU {
		ok = false
		c.fail("VM size", fmt.Sprintf("jobs may ask for %d vCPUs (%s) but the host has %d (hw.ncpu)", maxCPUs, cpusFrom, host.NCPU),
			fmt.Sprintf("set max_cpus to at most %d in %s", host.NCPU, s.Path))
	}
	if maxMem+s.MemoryReserve > phys {
		ok = false
		c.fail("VM size", fmt.Sprintf("jobs may ask for %s memory (%s), which with memory_reserve %s is more than the host's %s (hw.physmem): such a job could never start", maxMem, memFrom, s.MemoryReserve, phys.Human()),
			fmt.Sprintf("lower max_memory or memory_reserve in %s so that together they fit in %s", s.Path, phys.Human()))
	}
	if ok {
		c.ok("VM size", "template %s: %d CPUs, %s; jobs may ask for up to %d CPUs and %s; memory_reserve %s", s.Template, size.CPUs, size.Memory, maxCPUs, maxMem, s.MemoryReserve)
	}

	free := hostmem.Size(host.Free)
	if free < size.Memory || free-size.Memory < s.MemoryReserve {
		c.fail("admission", fmt.Sprintf("a VM of the template's size (%s) does not fit now: %s free, memory_reserve %s; the native executor requests no jobs and bhyve-executor's prepare fails until memory frees up", size.Memory, free.Human(), s.MemoryReserve),
			"free host memory (stop idle VMs; cap ZFS's ARC with vfs.zfs.arc_max in /boot/loader.conf), or lower memory_reserve")
		return
	}
	c.ok("admission", "room for %d more VM(s) of the template's size above memory_reserve", (free-s.MemoryReserve)/size.Memory)
}
