package snowplow_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/labkit/v2/events/snowplow"
	"gitlab.com/gitlab-org/labkit/v2/events/snowplow/metrics"
	"gitlab.com/gitlab-org/labkit/v2/events/snowplow/oidc"
)

// Upstream's usage-log writer gives up on snowplow when NewEmitter fails and
// logs why; the stand-in must fail there, name itself, and never contact the
// collector, however it is configured.
func TestNothingIsEverSent(t *testing.T) {
	collector, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = collector.Close() })
	contacted := make(chan struct{}, 1)
	go func() {
		if c, err := collector.Accept(); err == nil {
			_ = c.Close()
			contacted <- struct{}{}
		}
	}()

	var called bool
	emitter, err := snowplow.NewEmitter("http://"+collector.Addr().String(),
		snowplow.WithCallback(func(_, _ []snowplow.SendResult) { called = true }),
		snowplow.WithTokenSource(oidc.NewSource(oidc.WithSkipIfUnsupportedCloud(false))),
		snowplow.WithMetricsCollectorOptions(metrics.WithCollectorNamespace("gitlab_runner")),
	)
	assertStandIn(t, "NewEmitter", err, snowplow.ErrStandIn, "gitlab.com/gitlab-org/labkit/v2/events/snowplow")
	if emitter != nil {
		t.Error("NewEmitter returned an emitter with its error")
	}

	tracker, err := snowplow.NewTracker("gitlab-runner", emitter)
	assertStandIn(t, "NewTracker", err, snowplow.ErrStandIn, "gitlab.com/gitlab-org/labkit/v2/events/snowplow")
	err = tracker.TrackBillingEventWithOptionalInput(
		snowplow.BillingEventRequiredInput{Category: "c", EventType: "e", Quantity: 1},
		snowplow.BillingEventOptionalInput{ProjectID: 1},
	)
	assertStandIn(t, "TrackBillingEventWithOptionalInput", err, snowplow.ErrStandIn, "gitlab.com/gitlab-org/labkit/v2/events/snowplow")
	tracker.Stop()

	_, err = oidc.NewSource().Token(context.Background())
	assertStandIn(t, "oidc Token", err, oidc.ErrStandIn, "gitlab.com/gitlab-org/labkit/v2/events/snowplow/oidc")

	select {
	case <-contacted:
		t.Error("the collector was contacted")
	case <-time.After(100 * time.Millisecond):
	}
	if called {
		t.Error("the send callback was called, as if something had been sent")
	}
}

func assertStandIn(t *testing.T, what string, err, sentinel error, module string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, sentinel)
		return
	}
	if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "sandbox stand-in for "+module+":") {
		t.Errorf("%s: error %q should be %v", what, err, sentinel)
	}
}
