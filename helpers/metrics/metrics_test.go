package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

func TestCollector(t *testing.T) {
	c := New()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c), "a private registry like upstream's accepts it")

	o := c.Observer("r1")
	for _, p := range []jobvm.Phase{jobvm.PhaseClone, jobvm.PhaseBoot, jobvm.PhaseAddress, jobvm.PhaseSSH, jobvm.PhaseDestroy} {
		o.PhaseStarted("vm", p)
		o.PhaseDone("vm", p, 20*time.Millisecond, nil)
	}
	o.PhaseDone("vm", jobvm.PhaseAddress, time.Minute, errors.New("no lease"))
	o.PhaseDone("vm", jobvm.PhaseBind, time.Second, errors.New("arp -S failed"))
	o.PhaseDone("vm", jobvm.PhaseClone, 0, failure.Configf("no snapshot"))
	c.Ready("r1", true, 3*time.Millisecond)
	c.Ready("r1", false, 2*time.Second)
	c.StageFailed("r1", &failure.ScriptError{Code: 1})
	c.StageFailed("r1", fmt.Errorf("stage: %w", context.Canceled))
	c.StageFailed("r1", errors.New("connection lost"))
	c.Swept("r1", 2)
	c.AdmissionRefused("r1", "acquire")
	c.AdmissionRefused("r1", "acquire")
	c.AdmissionRefused("r1", "prepare")
	c.SetPools(func() []PoolStats {
		return []PoolStats{{Runner: "r1", Idle: 2, Booting: 1, InUse: 3, Destroying: 4, DestroyRetries: 5}}
	})

	assert.Equal(t, 5, testutil.CollectAndCount(c, "gitlab_runner_bhyve_phase_duration_seconds"))
	assert.Equal(t, 2, testutil.CollectAndCount(c, "gitlab_runner_bhyve_job_vm_ready_seconds"))

	want := `
# HELP gitlab_runner_bhyve_admissions_refused_total VMs not started because their memory would leave less than memory_reserve free on the host, by stage: acquire (no job requested: a VM of the template's size does not fit) or prepare (the job's VM did not fit in time).
# TYPE gitlab_runner_bhyve_admissions_refused_total counter
gitlab_runner_bhyve_admissions_refused_total{runner="r1",stage="acquire"} 2
gitlab_runner_bhyve_admissions_refused_total{runner="r1",stage="prepare"} 1
# HELP gitlab_runner_bhyve_destroy_retries_total Destroys of VMs tried again after a failure (each failure is also in gitlab_runner_bhyve_failures_total); a VM is retried until it is gone.
# TYPE gitlab_runner_bhyve_destroy_retries_total counter
gitlab_runner_bhyve_destroy_retries_total{runner="r1"} 5
# HELP gitlab_runner_bhyve_failures_total Failures by reason: the phase that failed (clone, boot, address, bind, ssh, poweroff, destroy) or the stage outcome (script, lost_connection), and config for settings errors.
# TYPE gitlab_runner_bhyve_failures_total counter
gitlab_runner_bhyve_failures_total{reason="address",runner="r1"} 1
gitlab_runner_bhyve_failures_total{reason="bind",runner="r1"} 1
gitlab_runner_bhyve_failures_total{reason="config",runner="r1"} 1
gitlab_runner_bhyve_failures_total{reason="lost_connection",runner="r1"} 1
gitlab_runner_bhyve_failures_total{reason="script",runner="r1"} 1
# HELP gitlab_runner_bhyve_orphans_swept_total Orphaned job VMs (their runner process gone) destroyed by a sweep.
# TYPE gitlab_runner_bhyve_orphans_swept_total counter
gitlab_runner_bhyve_orphans_swept_total{runner="r1"} 2
# HELP gitlab_runner_bhyve_vms VMs by state: idle (booted, waiting in the pool), booting (for the pool), in_use (held by a job, warm or cold) and destroying (powered off, being destroyed in the background); all count against the runner's limit.
# TYPE gitlab_runner_bhyve_vms gauge
gitlab_runner_bhyve_vms{runner="r1",state="booting"} 1
gitlab_runner_bhyve_vms{runner="r1",state="destroying"} 4
gitlab_runner_bhyve_vms{runner="r1",state="idle"} 2
gitlab_runner_bhyve_vms{runner="r1",state="in_use"} 3
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want),
		"gitlab_runner_bhyve_admissions_refused_total", "gitlab_runner_bhyve_destroy_retries_total", "gitlab_runner_bhyve_failures_total", "gitlab_runner_bhyve_orphans_swept_total", "gitlab_runner_bhyve_vms"))

	lint, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, lint, "metric names follow Prometheus conventions")
}
