package main

import (
	"context"
	"fmt"
	"runtime"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version"
)

func versionCommand(ctx context.Context, a *app, args []string) error {
	fmt.Fprintf(a.stdout, "bhyve-executor %s (%s, %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
