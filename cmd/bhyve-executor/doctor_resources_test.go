package main_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

func TestDoctorChecksResourceSettingsAgainstTheHost(t *testing.T) {
	t.Parallel()
	// The simulated host: 16 GiB, 8 CPUs, 12 GiB free; template 2 CPUs, 1G.
	h := fixture.New(t, sim.Options{}, `max_cpus = 4`, `max_memory = "8G"`)
	out, _, code := operator(t, h, h.SettingsPath, "doctor")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "[ ok ] host memory: 16.0G physical, 12.0G free, 8 CPUs")
	assert.Contains(t, out, "[ ok ] VM size: template tmpl: 2 CPUs, 1G; jobs may ask for up to 4 CPUs and 8G; memory_reserve 1G")
	assert.Contains(t, out, "[ ok ] admission: room for 11 more VM(s) of the template's size above memory_reserve")

	greedy := filepath.Join(t.TempDir(), "greedy.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, greedy, `max_cpus = 16`, `max_memory = "16G"`))
	require.NoError(t, h.SetFreeMemory(1536<<20))
	out, _, code = operator(t, h, greedy, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `[FAIL] VM size: jobs may ask for 16 vCPUs (`+greedy+`: runners."sim-runner".max_cpus) but the host has 8 (hw.ncpu)`)
	assert.Contains(t, out, "fix: set max_cpus to at most 8 in "+greedy)
	assert.Contains(t, out, "which with memory_reserve 1G is more than the host's 16.0G (hw.physmem): such a job could never start")
	assert.Contains(t, out, "fix: lower max_memory or memory_reserve in "+greedy)
	assert.Contains(t, out, "[FAIL] admission: a VM of the template's size (1G) does not fit now: 1.5G free, memory_reserve 1G")
	assert.Contains(t, out, "fix: free host memory (stop idle VMs; cap ZFS's ARC with vfs.zfs.arc_max in /boot/loader.conf), or lower memory_reserve")

	broken := filepath.Join(t.TempDir(), "broken.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, broken, `sysctl_command = ["/nonexistent/sysctl"]`))
	out, _, code = operator(t, h, broken, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "[FAIL] host memory: read the host's memory and CPUs: /nonexistent/sysctl -n hw.physmem")
	assert.Contains(t, out, "fix: on FreeBSD leave sysctl_command = []")
}
