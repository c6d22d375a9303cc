// Package metrics is a sandbox stand-in for
// gitlab.com/gitlab-org/labkit/v2/events/snowplow/metrics, the options of the
// snowplow emitter's Prometheus collector. See ../../../README.md.
package metrics

// CollectorOption configures the emitter's collector. None has an effect:
// the snowplow stand-in never creates an emitter.
type CollectorOption func(*collector)

type collector struct{}

// WithCollectorNamespace would prefix the metric names.
func WithCollectorNamespace(string) CollectorOption { return func(*collector) {} }

// WithCollectorBatchDeliveryDurationBuckets would set the delivery-time buckets.
func WithCollectorBatchDeliveryDurationBuckets([]float64) CollectorOption {
	return func(*collector) {}
}
