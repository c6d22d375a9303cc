// Command bhyve-executor runs GitLab CI jobs in fresh bhyve VMs behind GitLab
// Runner's Custom executor protocol, for stock gitlab-runner installations.
package main

import (
	"fmt"
	"os"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("bhyve-executor", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: bhyve-executor version")
	os.Exit(2)
}
