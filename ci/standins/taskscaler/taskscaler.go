// Package taskscaler is a sandbox stand-in for gitlab.com/gitlab-org/fleeting/taskscaler,
// which matches job capacity to fleeting instances for upstream's instance
// and docker-autoscaler executors. New fails with an error naming the
// stand-in, so those executors stop at their first job. See README.md.
package taskscaler

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/gitlab-org/fleeting/fleeting"
	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
	"gitlab.com/gitlab-org/fleeting/taskscaler/storage"
)

// ErrStandIn is what New returns, always.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/fleeting/taskscaler: " +
	"the instance and docker-autoscaler executors cannot run in this build")

// ErrNoCapacity: Reserve found no free capacity.
var ErrNoCapacity = errors.New("taskscaler: no capacity")

// Taskscaler hands out capacity on instances, as upstream calls it.
type Taskscaler interface {
	Reserve(key string) error
	Unreserve(key string)
	Acquire(ctx context.Context, key string) (Acquisition, error)
	Release(key string)
	Suspend(key string) error
	Resume(ctx context.Context, key string) (Acquisition, error)
	HasCapability(capability provider.Capability) bool
	ConfigureSchedule(schedules ...Schedule) error
	MetricsCollector() MetricsCollector
	FleetingMetricsCollector() FleetingMetricsCollector
	Shutdown(ctx context.Context)
}

// Acquisition is capacity on one instance held for one job.
type Acquisition interface {
	InstanceConnectInfo(ctx context.Context) (provider.ConnectInfo, error)
	Slot() int
	WithContext(ctx context.Context) (context.Context, context.CancelFunc)
}

// MetricsCollector receives taskscaler measurements. Upstream exports it to
// Prometheus, so it must be a prometheus.Collector.
type MetricsCollector interface{ prometheus.Collector }

// FleetingMetricsCollector receives instance-group measurements, exported
// the same way.
type FleetingMetricsCollector interface{ prometheus.Collector }

// Schedule is one idle-capacity policy period.
type Schedule struct {
	Periods          []string
	Timezone         string
	IdleCount        int
	IdleTime         time.Duration
	ScaleFactor      float64
	ScaleFactorLimit int
	PreemptiveMode   bool
}

// UpFuncInstance is an instance that just came up.
type UpFuncInstance struct {
	Info         provider.ConnectInfo
	Cause        fleeting.Cause
	Restored     bool
	Acquisitions []string
}

// UpFunc readies an instance before it takes jobs; an error removes it.
type UpFunc func(ts Taskscaler, instance UpFuncInstance) error

// HeartbeatFunc checks an instance is still reachable before it is handed out.
type HeartbeatFunc func(ctx context.Context, info provider.ConnectInfo) error

// Option configures New. No option has an effect in this stand-in, because
// New never returns a taskscaler.
type Option func(*config)

type config struct{}

func noEffect(*config) {}

// New would start a taskscaler on group. It always fails with ErrStandIn,
// which upstream reports as "creating taskscaler: …" for the job it was
// acquiring capacity for.
func New(ctx context.Context, group provider.InstanceGroup, opts ...Option) (Taskscaler, error) {
	return nil, ErrStandIn
}

// WithReservations enables Reserve/Unreserve before Acquire.
func WithReservations() Option { return noEffect }

// WithReservationThrottling limits reservations to what can be provisioned.
func WithReservationThrottling() Option { return noEffect }

// WithDeleteInstancesOnShutdown deletes instances on Shutdown.
func WithDeleteInstancesOnShutdown() Option { return noEffect }

// WithCapacityPerInstance sets how many jobs share one instance.
func WithCapacityPerInstance(int) Option { return noEffect }

// WithMaxUseCount sets how many jobs an instance runs before removal.
func WithMaxUseCount(int) Option { return noEffect }

// WithMaxInstances caps the instance count.
func WithMaxInstances(int) Option { return noEffect }

// WithShutdownDeletionRetries sets how often deletion is retried on Shutdown.
func WithShutdownDeletionRetries(int) Option { return noEffect }

// WithFailureThreshold sets how many failures remove an instance.
func WithFailureThreshold(int) Option { return noEffect }

// WithScaleThrottle limits how fast instances are requested.
func WithScaleThrottle(limit, burst int) Option { return noEffect }

// WithUpdateInterval sets how often the instance group is polled.
func WithUpdateInterval(time.Duration) Option { return noEffect }

// WithUpdateIntervalWhenExpecting sets the poll interval while instances are pending.
func WithUpdateIntervalWhenExpecting(time.Duration) Option { return noEffect }

// WithDeletionRetryInterval sets the wait between deletion attempts.
func WithDeletionRetryInterval(time.Duration) Option { return noEffect }

// WithShutdownDeletionInterval sets the wait between deletions on Shutdown.
func WithShutdownDeletionInterval(time.Duration) Option { return noEffect }

// WithInstanceGroupSettings sets how instances are connected to.
func WithInstanceGroupSettings(provider.Settings) Option { return noEffect }

// WithMetricsCollector sets where taskscaler measurements go.
func WithMetricsCollector(MetricsCollector) Option { return noEffect }

// WithFleetingMetricsCollector sets where instance-group measurements go.
func WithFleetingMetricsCollector(FleetingMetricsCollector) Option { return noEffect }

// WithInstanceUpFunc sets the function that readies new instances.
func WithInstanceUpFunc(UpFunc) Option { return noEffect }

// WithHeartbeatFunc sets the reachability check run before handing out an instance.
func WithHeartbeatFunc(HeartbeatFunc) Option { return noEffect }

// WithLogger sets the taskscaler's logger.
func WithLogger(hclog.Logger) Option { return noEffect }

// WithStorage persists instance state across restarts.
func WithStorage(storage.Storage) Option { return noEffect }
