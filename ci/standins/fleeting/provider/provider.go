// Package provider is a sandbox stand-in for
// gitlab.com/gitlab-org/fleeting/fleeting/provider. It declares only the types
// upstream gitlab-runner's autoscaler uses, with the field names and types its
// composite literals and conversions need. See ../README.md.
package provider

import "time"

// Protocol names how an instance is reached; upstream converts its config
// string into it.
type Protocol string

// ConnectorConfig is how to connect to an instance.
type ConnectorConfig struct {
	OS                   string
	Arch                 string
	Protocol             Protocol
	ProtocolPort         int
	Username             string
	Password             string
	Key                  []byte
	UseStaticCredentials bool
	Keepalive            time.Duration
	Timeout              time.Duration
}

// ConnectInfo is what is known about one instance for connecting to it.
type ConnectInfo struct {
	ConnectorConfig

	ID           string
	InternalAddr string
	ExternalAddr string
}

// Settings are the instance group settings handed to the taskscaler.
type Settings struct {
	ConnectorConfig
}

// Capability is a feature a plugin may support.
type Capability string

// CapabilitySuspendResume: the plugin can suspend an instance and resume it.
const CapabilitySuspendResume Capability = "suspend_resume"

// InstanceGroup is a plugin's group of instances. Upstream only passes it from
// the plugin runner to the taskscaler and calls none of its methods, so the
// stand-in names none: no instance group exists in a sandbox build.
type InstanceGroup interface{}
