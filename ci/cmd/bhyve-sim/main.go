// Command bhyve-sim is the simulated FreeBSD host used to test the bhyve
// executor without FreeBSD: `bhyve-sim up` prints exports for eval, `down`
// removes everything, and the installed vm/sysrc wrappers exec it. See
// ci/sim/README.md.
package main

import (
	"os"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/cli"
)

func main() { os.Exit(cli.Main(os.Args)) }
