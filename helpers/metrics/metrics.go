// Package metrics exports what the bhyve executor does as Prometheus
// metrics. Upstream serves only collectors that executor providers
// implement (its registry is private and ignores promauto/default-registry
// metrics), so the provider embeds a Collector.
package metrics

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// PoolStats is one runner's pool as the gauges report it.
type PoolStats struct {
	Runner                           string
	Idle, Booting, InUse, Destroying int
	DestroyRetries                   int // since the start
}

// Collector holds the bhyve executor's metrics.
type Collector struct {
	phases   *prometheus.HistogramVec
	ready    *prometheus.HistogramVec
	failures *prometheus.CounterVec
	swept    *prometheus.CounterVec
	refused  *prometheus.CounterVec
	vms      *prometheus.Desc
	retries  *prometheus.Desc

	mu    sync.Mutex
	pools func() []PoolStats
}

// Buckets from a warm pickup (milliseconds) to a slow cold boot (minutes).
var buckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// New returns an empty collector.
func New() *Collector {
	return &Collector{
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gitlab_runner_bhyve_phase_duration_seconds",
			Help:    "Time spent in each phase of a job VM's life: clone, boot (vm start until Running), address (DHCP lease found), bind (address and MAC bound to the tap), ssh (SSH ready), poweroff (until the guest can run nothing; a job waits for it), destroy.",
			Buckets: buckets,
		}, []string{"runner", "phase"}),
		ready: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gitlab_runner_bhyve_job_vm_ready_seconds",
			Help:    "Time from the start of a job's prepare until its VM was ready, by source: warm (from the pool) or cold (booted for the job).",
			Buckets: buckets,
		}, []string{"runner", "source"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_bhyve_failures_total",
			Help: "Failures by reason: the phase that failed (clone, boot, address, bind, ssh, poweroff, destroy) or the stage outcome (script, lost_connection), and config for settings errors.",
		}, []string{"runner", "reason"}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_bhyve_orphans_swept_total",
			Help: "Orphaned job VMs (their runner process gone) destroyed by a sweep.",
		}, []string{"runner"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitlab_runner_bhyve_admissions_refused_total",
			Help: "VMs not started because their memory would leave less than memory_reserve free on the host, by stage: acquire (no job requested: a VM of the template's size does not fit) or prepare (the job's VM did not fit in time).",
		}, []string{"runner", "stage"}),
		vms: prometheus.NewDesc("gitlab_runner_bhyve_vms",
			"VMs by state: idle (booted, waiting in the pool), booting (for the pool), in_use (held by a job, warm or cold) and destroying (powered off, being destroyed in the background); all count against the runner's limit.",
			[]string{"runner", "state"}, nil),
		retries: prometheus.NewDesc("gitlab_runner_bhyve_destroy_retries_total",
			"Destroys of VMs tried again after a failure (each failure is also in gitlab_runner_bhyve_failures_total); a VM is retried until it is gone.",
			[]string{"runner"}, nil),
	}
}

// SetPools tells the collector where the pool gauges come from.
func (c *Collector) SetPools(f func() []PoolStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pools = f
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.phases.Describe(ch)
	c.ready.Describe(ch)
	c.failures.Describe(ch)
	c.swept.Describe(ch)
	c.refused.Describe(ch)
	ch <- c.vms
	ch <- c.retries
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.phases.Collect(ch)
	c.ready.Collect(ch)
	c.failures.Collect(ch)
	c.swept.Collect(ch)
	c.refused.Collect(ch)
	c.mu.Lock()
	pools := c.pools
	c.mu.Unlock()
	if pools == nil {
		return
	}
	for _, p := range pools() {
		for state, n := range map[string]int{"idle": p.Idle, "booting": p.Booting, "in_use": p.InUse, "destroying": p.Destroying} {
			ch <- prometheus.MustNewConstMetric(c.vms, prometheus.GaugeValue, float64(n), p.Runner, state)
		}
		ch <- prometheus.MustNewConstMetric(c.retries, prometheus.CounterValue, float64(p.DestroyRetries), p.Runner)
	}
}

// Observer records the phases of one runner's VMs.
func (c *Collector) Observer(runner string) jobvm.Observer { return observer{c: c, runner: runner} }

type observer struct {
	c      *Collector
	runner string
}

func (o observer) PhaseStarted(string, jobvm.Phase) {}

func (o observer) PhaseDone(_ string, p jobvm.Phase, took time.Duration, err error) {
	if err != nil {
		reason := string(p)
		if failure.KindOf(err) == failure.Config {
			reason = "config"
		}
		o.c.failures.WithLabelValues(o.runner, reason).Inc()
		return
	}
	o.c.phases.WithLabelValues(o.runner, string(p)).Observe(took.Seconds())
}

// Ready records how long a job waited for its VM.
func (c *Collector) Ready(runner string, warm bool, took time.Duration) {
	source := "cold"
	if warm {
		source = "warm"
	}
	c.ready.WithLabelValues(runner, source).Observe(took.Seconds())
}

// StageFailed counts a stage that did not succeed: its script failed, the
// job timed out, or the connection was lost. A cancelled job is not a
// failure of anything.
func (c *Collector) StageFailed(runner string, err error) {
	var reason string
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return
	case failure.KindOf(err) == failure.Script:
		reason = "script"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "timeout"
	default:
		reason = "lost_connection"
	}
	c.failures.WithLabelValues(runner, reason).Inc()
}

// Swept counts orphans a sweep destroyed.
func (c *Collector) Swept(runner string, n int) {
	c.swept.WithLabelValues(runner).Add(float64(n))
}

// AdmissionRefused counts a VM admission refused at stage ("acquire" or
// "prepare").
func (c *Collector) AdmissionRefused(runner, stage string) {
	c.refused.WithLabelValues(runner, stage).Inc()
}
