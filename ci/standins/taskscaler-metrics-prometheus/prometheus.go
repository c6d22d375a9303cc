// Package prometheus is a sandbox stand-in for
// gitlab.com/gitlab-org/fleeting/taskscaler/metrics/prometheus, the Prometheus
// collector of taskscaler's measurements. See README.md.
//
// It has nothing of its own to say: like fleeting's collector, it stands for
// metrics that cannot exist in this build, so it is that same empty collector.
package prometheus

import (
	"github.com/prometheus/client_golang/prometheus"

	flprometheus "gitlab.com/gitlab-org/fleeting/fleeting/metrics/prometheus"
)

// Collector describes and collects nothing: no taskscaler ever runs in a
// sandbox build (taskscaler.New fails).
type Collector = flprometheus.Collector

// Option configures New; none has an effect.
type Option = flprometheus.Option

// New returns an empty collector.
func New(opts ...Option) *Collector { return flprometheus.New(opts...) }

// WithConstLabels would set labels every metric carries.
func WithConstLabels(prometheus.Labels) Option { return func(*Collector) {} }

// WithInstanceReadinessTimeBuckets would set the readiness-time buckets.
func WithInstanceReadinessTimeBuckets([]float64) Option { return func(*Collector) {} }
