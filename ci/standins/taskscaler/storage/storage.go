// Package storage is a sandbox stand-in for
// gitlab.com/gitlab-org/fleeting/taskscaler/storage, taskscaler's state
// storage across runner restarts. See ../README.md.
package storage

import (
	"errors"
	"fmt"
)

// ErrStandIn is what NewFileStorage returns, always.
var ErrStandIn = errors.New("sandbox stand-in for gitlab.com/gitlab-org/fleeting/taskscaler/storage: " +
	"the instance and docker-autoscaler executors cannot run in this build")

// Storage keeps taskscaler state. Upstream only passes one to the taskscaler
// and calls none of its methods, so the stand-in names none.
type Storage interface{}

// NewFileStorage would keep state in files under dir. It fails with
// ErrStandIn rather than create a directory nothing would ever use.
func NewFileStorage(dir string) (Storage, error) {
	return nil, fmt.Errorf("state storage in %s: %w", dir, ErrStandIn)
}
