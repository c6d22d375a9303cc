// Package prometheus is a sandbox stand-in for
// gitlab.com/gitlab-org/fleeting/fleeting/metrics/prometheus, the Prometheus
// collector of fleeting's instance-group measurements. See README.md.
package prometheus

import "github.com/prometheus/client_golang/prometheus"

// Option configures New. In this stand-in no option has an effect: there is
// nothing to measure (see Collector).
type Option func(*Collector)

// Collector would export instance creation, running and deletion times. In a
// sandbox build no instance group ever runs (fleeting.RunPlugin fails), so it
// describes and collects nothing. The taskscaler collector stand-in is this
// same type, for the same reason.
type Collector struct{}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a collector; opts are applied and have no effect.
func New(opts ...Option) *Collector {
	c := &Collector{}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// WithConstLabels would set labels every metric carries.
func WithConstLabels(prometheus.Labels) Option { return noEffect }

// WithInstanceCreationTimeBuckets would set the creation-time buckets.
func WithInstanceCreationTimeBuckets([]float64) Option { return noEffect }

// WithInstanceIsRunningTimeBuckets would set the time-to-running buckets.
func WithInstanceIsRunningTimeBuckets([]float64) Option { return noEffect }

// WithInstanceDeletionTimeBuckets would set the deletion-time buckets.
func WithInstanceDeletionTimeBuckets([]float64) Option { return noEffect }

// WithInstanceLifeDurationBuckets would set the instance-lifetime buckets.
func WithInstanceLifeDurationBuckets([]float64) Option { return noEffect }

func noEffect(*Collector) {}

// Describe sends nothing: there are no instance-group metrics in this build.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect sends nothing, for the same reason.
func (c *Collector) Collect(chan<- prometheus.Metric) {}
