// Package oidc is a sandbox stand-in for
// gitlab.com/gitlab-org/labkit/v2/events/snowplow/oidc, which would fetch an
// OIDC identity token from the cloud the runner runs on to authenticate to the
// snowplow collector. See ../../../README.md.
package oidc

import (
	"context"
	"errors"
)

// ErrStandIn is what Source.Token returns, always: the stand-in never asks a
// cloud metadata service for anything.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/labkit/v2/events/snowplow/oidc: " +
	"no identity token is fetched in this build")

// Option configures NewSource. None has an effect: no token is ever fetched.
type Option func(*Source)

// WithSkipIfUnsupportedCloud would send events without a token when the cloud
// is not one the source knows.
func WithSkipIfUnsupportedCloud(bool) Option { return func(*Source) {} }

// Source would hand out identity tokens.
type Source struct{}

// NewSource returns a source that never produces a token.
func NewSource(opts ...Option) *Source {
	s := &Source{}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// Token fails with ErrStandIn.
func (*Source) Token(context.Context) (string, error) { return "", ErrStandIn }
