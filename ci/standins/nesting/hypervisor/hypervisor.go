// Package hypervisor is a sandbox stand-in for
// gitlab.com/gitlab-org/fleeting/nesting/hypervisor. See ../README.md.
package hypervisor

// VirtualMachine is a nested VM on an instance, as upstream reads it.
type VirtualMachine interface {
	GetId() string
	GetName() string
	GetAddr() string
}
