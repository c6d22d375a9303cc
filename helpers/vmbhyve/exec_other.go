//go:build !unix

package vmbhyve

import "os/exec"

// configureProcess keeps os/exec's defaults (kill on cancel) where there are
// no process groups or SIGTERM; vm-bhyve only exists on FreeBSD anyway.
func configureProcess(*exec.Cmd) {}
