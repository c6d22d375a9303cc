// Package version holds the version of gitlab-runner-bhyve itself, as opposed
// to the upstream GitLab Runner version the native build is based on.
package version

// Version is set at link time by `make build` / `make runner`
// (-X gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version.Version=...).
var Version = "dev"
