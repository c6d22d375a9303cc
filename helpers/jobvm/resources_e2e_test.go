//go:build linux

package jobvm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// collect is a job log a test reads afterwards.
type collect struct{ lines []string }

func (c *collect) logf(t *testing.T) jobvm.Logf {
	return func(format string, args ...any) {
		line := strings.TrimSpace(fmt.Sprintf(format, args...))
		c.lines = append(c.lines, line)
		t.Log(line)
	}
}

func (c *collect) String() string { return strings.Join(c.lines, "\n") }

func (e *e2e) cloned(t *testing.T) bool {
	t.Helper()
	calls, err := e.sim.VMInvocations()
	require.NoError(t, err)
	for _, c := range calls {
		if len(c) > 0 && c[0] == "clone" {
			return true
		}
	}
	return false
}

// A job asking for a size within the caps gets a VM that vm-bhyve starts
// with that size: its conf, `vm info` and the bhyve line vm-bhyve logs.
func TestE2EResourcesRequestWithinCaps(t *testing.T) {
	t.Parallel()
	e := newE2E(t, `max_cpus = 4`, `max_memory = "4G"`)
	m := e.manager()
	var err error
	m.Config.Resources, err = jobvm.ParseResources(func(k string) string {
		return map[string]string{jobvm.VarCPUs: "3", jobvm.VarMemory: "2G"}[k]
	})
	require.NoError(t, err)
	log := &collect{}
	vm, err := m.Create(context.Background(), jobvm.Job{ID: 301}, log.logf(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = vm.Close(context.Background()) })

	assert.Contains(t, log.String(), "VM size: 3 CPUs, 2G memory (BHYVE_CPUS, BHYVE_MEMORY)")
	conf, err := e.host.Driver(e.s).ReadConf(vm.Name)
	require.NoError(t, err)
	assert.Equal(t, "3", conf["cpu"])
	assert.Equal(t, "2G", conf["memory"])

	info, err := e.sim.VM(context.Background(), "info", vm.Name)
	require.NoError(t, err)
	assert.Contains(t, info.Stdout, "\n  state: running (")
	assert.Contains(t, info.Stdout, "\n  cpu: 3\n")
	assert.Contains(t, info.Stdout, "\n  memory: 2G\n")
	vmLog, err := os.ReadFile(e.sim.VMLog(vm.Name))
	require.NoError(t, err)
	assert.Contains(t, string(vmLog), "[memory: 2G]", "vm start ran bhyve with the requested memory")

	require.NoError(t, vm.Close(context.Background()))
	e.gone(t, vm.Name)
}

// A request above max_memory is a configuration error naming the cap, and
// nothing is cloned.
func TestE2EResourcesAboveCapRefused(t *testing.T) {
	t.Parallel()
	e := newE2E(t, `max_memory = "4G"`)
	m := e.manager()
	m.Config.Resources = jobvm.Resources{Memory: 8 * hostmem.GiB}
	_, err := m.Create(context.Background(), jobvm.Job{ID: 302}, logTo(t))
	require.Error(t, err)
	assert.Equal(t, failure.Config, failure.KindOf(err))
	assert.Contains(t, err.Error(), `BHYVE_MEMORY 8G is above max_memory 4G (`+e.s.Path+`: runners."sim-runner".max_memory); ask for at most 4G, or raise max_memory`)
	assert.False(t, e.cloned(t), "a refused request clones nothing")
	e.gone(t, jobvm.JobVMName(e.s.NamePrefix, e.s.RunnerName, 302, 0))
}

// With the host short of memory, a VM is not started: at once when the
// front-end does not wait (bhyve-executor), or as soon as memory frees up
// when it does (the native executor).
func TestE2EAdmission(t *testing.T) {
	t.Parallel()
	e := newE2E(t, `memory_reserve = "1G"`)
	// The template has memory=1024M: 1.5G free would leave 0.5G.
	require.NoError(t, e.sim.SetFreeMemory(1536<<20))

	_, err := e.manager().Create(context.Background(), jobvm.Job{ID: 303}, logTo(t))
	var ae *jobvm.AdmissionError
	require.True(t, errors.As(err, &ae), "want an *AdmissionError, got %v", err)
	assert.Equal(t, failure.System, failure.KindOf(err))
	assert.Contains(t, err.Error(), "not starting a VM with 1G memory: the host has 1.5G free, and starting it would leave less than memory_reserve 1G")
	assert.False(t, e.cloned(t), "a refused VM is not cloned")

	m := e.manager()
	m.Config.AdmissionWait = time.Minute
	go func() {
		time.Sleep(1500 * time.Millisecond)
		assert.NoError(t, e.sim.SetFreeMemory(4<<30))
	}()
	log := &collect{}
	start := time.Now()
	vm, err := m.Create(context.Background(), jobvm.Job{ID: 304}, log.logf(t))
	require.NoError(t, err)
	waited := time.Since(start)
	t.Logf("admitted and ready %s after the prepare began (memory freed at 1.5s)", waited.Round(time.Millisecond))
	assert.GreaterOrEqual(t, waited, 1500*time.Millisecond)
	assert.Contains(t, log.String(), "Waiting up to 1m0s for host memory: 1.5G free, the VM needs 1G and memory_reserve is 1G")
	require.NoError(t, vm.Close(context.Background()))
	e.gone(t, vm.Name)
}
