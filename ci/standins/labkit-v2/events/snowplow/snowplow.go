// Package snowplow is a sandbox stand-in for
// gitlab.com/gitlab-org/labkit/v2/events/snowplow, GitLab's client for
// snowplow usage (billing) events. It never sends anything: NewEmitter fails
// with an error naming the stand-in, which upstream logs as "Failed to create
// snowplow_billing writer" and runs without that writer. See ../../README.md.
package snowplow

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/gitlab-org/labkit/v2/events/snowplow/metrics"
)

// ErrStandIn is returned by everything that would send or queue an event.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/labkit/v2/events/snowplow: " +
	"usage events are never sent in this build")

// SendResult is the outcome of one batch sent to the collector.
type SendResult struct {
	EventCount int
	StatusCode int
	Err        error
}

// SendCallback is told, after each send loop, which batches went through.
type SendCallback func(successes []SendResult, failures []SendResult)

// TokenSource authenticates requests to the collector.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// EmitterOption configures NewEmitter. None has an effect: no emitter is made.
type EmitterOption func(*Emitter)

// WithCallback would register cb for send results.
func WithCallback(SendCallback) EmitterOption { return func(*Emitter) {} }

// WithTokenSource would authenticate requests with ts.
func WithTokenSource(TokenSource) EmitterOption { return func(*Emitter) {} }

// WithMetricsCollectorOptions would configure the emitter's collector.
func WithMetricsCollectorOptions(...metrics.CollectorOption) EmitterOption {
	return func(*Emitter) {}
}

// Emitter would batch events and send them to a collector.
type Emitter struct{}

// NewEmitter fails with ErrStandIn, so that no event is ever queued for
// collectorURI and the operator is told why.
func NewEmitter(collectorURI string, opts ...EmitterOption) (*Emitter, error) {
	return nil, ErrStandIn
}

// emptyCollector is the emitter's Prometheus collector: nothing is sent, so
// there is nothing to count.
type emptyCollector struct{}

func (emptyCollector) Describe(chan<- *prometheus.Desc) {}
func (emptyCollector) Collect(chan<- prometheus.Metric) {}

// Collector is the emitter's Prometheus collector.
func (*Emitter) Collector() prometheus.Collector { return emptyCollector{} }

// Tracker would build events and hand them to an emitter.
type Tracker struct{}

// NewTracker fails with ErrStandIn, like NewEmitter.
func NewTracker(appID string, emitter *Emitter) (*Tracker, error) {
	return nil, ErrStandIn
}

// BillingEventRequiredInput is what every billing event carries.
type BillingEventRequiredInput struct {
	Category      string
	EventType     string
	Realm         string
	UnitOfMeasure string
	Quantity      float64
}

// BillingEventOptionalInput is what a billing event may carry.
type BillingEventOptionalInput struct {
	Subject          string
	DeploymentType   string
	InstanceID       string
	UniqueInstanceID string
	ProjectID        int64
	NamespaceID      int64
	RootNamespaceID  int64
	OrganizationID   int64
	Metadata         map[string]any
}

// TrackBillingEventWithOptionalInput fails with ErrStandIn: nothing is queued.
func (*Tracker) TrackBillingEventWithOptionalInput(BillingEventRequiredInput, BillingEventOptionalInput) error {
	return ErrStandIn
}

// Stop would flush the tracker's emitter.
func (*Tracker) Stop() {}
