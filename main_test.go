package main

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/gitlab-org/gitlab-runner/common"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/executors/bhyve"
)

// These tests compile only where every upstream module is available (the
// project's full-access pipeline); elsewhere `make typecheck` checks them.

func TestRegistryHasEveryUpstreamExecutorPlusBhyve(t *testing.T) {
	providers := registry()

	var names []string
	for name, p := range providers.All() {
		names = append(names, name)
		require.NoError(t, common.ValidateExecutorProvider(p), "executor %s", name)
	}
	slices.Sort(names)
	assert.Equal(t, []string{
		"bhyve", "custom", "docker", "docker+machine", "docker-autoscaler", "docker-windows",
		"instance", common.ExecutorKubernetes, "parallels", "shell", "ssh", "virtualbox",
	}, names)
	assert.NotNil(t, providers.GetByName(bhyve.ExecutorName))
}

func TestEveryUpstreamCommandIsPresent(t *testing.T) {
	providers := registry()
	client, shutdown, collector := gitlabClient(providers)
	defer shutdown()

	var names []string
	for _, c := range allCommands(client, collector, providers) {
		names = append(names, c.Name)
	}
	for _, want := range []string{
		"list", "lint", "register", "reset-token", "run", "run-single", "unregister", "verify",
		"fleeting", "steps", "artifacts-downloader", "artifacts-uploader", "cache-archiver",
		"cache-extractor", "cache-init", "health-check", "probe-url", "verify-version",
		"proxy-exec", "read-logs", "install", "uninstall", "start", "stop", "restart", "status",
		"wrapper",
	} {
		assert.Contains(t, names, want)
	}
}
