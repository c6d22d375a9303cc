// Package api is a sandbox stand-in for gitlab.com/gitlab-org/step-runner/pkg/api,
// whose source this build machine's module proxy refuses: the socket
// addressing upstream's steps commands use.
package api

import (
	"net"
	"os"
	"path/filepath"
)

// DefaultSocketPath is where the steps commands listen and dial when given
// no --socket. The stand-in's choice, not necessarily the real one's: the
// stand-in serves nothing on it.
func DefaultSocketPath() string {
	return filepath.Join(os.TempDir(), "step-runner.sock")
}

// SocketAddr is the unix socket address of path.
func SocketAddr(path string) *net.UnixAddr {
	return &net.UnixAddr{Name: path, Net: "unix"}
}
