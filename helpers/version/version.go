// Package version holds the version of gitlab-runner-bhyve itself, as opposed
// to the upstream GitLab Runner version the native build is based on, and
// tells a sandbox build (one linked with ci/go.work's stand-in modules) from a
// real one.
package version

// Version is set at link time by `make build` / `make runner` /
// `make runner-sandbox`
// (-X gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version.Version=...).
var Version = "dev"
