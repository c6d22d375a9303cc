// Package fleeting is a sandbox stand-in for gitlab.com/gitlab-org/fleeting/fleeting,
// whose source the module proxy of this project's build machines refuses.
//
// It declares what upstream gitlab-runner's autoscaler uses. Starting a plugin
// fails with an error naming this stand-in, so the instance and
// docker-autoscaler executors stop at their first job instead of pretending to
// run. See README.md.
package fleeting

import (
	"errors"

	"github.com/hashicorp/go-hclog"

	"gitlab.com/gitlab-org/fleeting/fleeting/provider"
)

// ErrStandIn is returned by everything here that would need a real plugin.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/fleeting/fleeting: " +
	"the instance and docker-autoscaler executors cannot run in this build")

// Cause says why an instance exists.
type Cause string

// CausePreexisted: the instance was already there when the group was set up.
const CausePreexisted Cause = "preexisted"

// PluginOption configures RunPlugin.
type PluginOption func(*pluginOptions)

type pluginOptions struct {
	logger hclog.Logger
}

// WithPluginLogger sets the logger the plugin's output would go to.
func WithPluginLogger(logger hclog.Logger) PluginOption {
	return func(o *pluginOptions) { o.logger = logger }
}

// Runner is a running plugin process. RunPlugin never returns one.
type Runner struct{}

// RunPlugin would start the plugin binary at path with config. The stand-in
// cannot speak the plugin protocol, so it always fails with ErrStandIn, and it
// says so through the plugin logger as well, because that is where an operator
// watching the plugin looks.
func RunPlugin(path string, config []byte, opts ...PluginOption) (*Runner, error) {
	var o pluginOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger != nil {
		o.logger.Error("fleeting plugin not started", "path", path, "error", ErrStandIn)
	}
	return nil, ErrStandIn
}

// InstanceGroup is the plugin's instance group; nil, as no plugin ever runs.
func (r *Runner) InstanceGroup() provider.InstanceGroup { return nil }

// Kill stops the plugin process; there is none.
func (r *Runner) Kill() {}
