// Package e2e runs the product as an operator does: the sandbox build of
// gitlab-runner (upstream's own register and run loops, with the bhyve
// executor built in, or with upstream's custom executor calling
// bhyve-executor) as separate processes on a simulated FreeBSD host, taking
// jobs from a fake GitLab. Anything upstream decides (when Cleanup and
// Release run, prepare retries, failure reasons, cancel, signals) is
// observed here through upstream's code, not an imitation of it.
//
// Needs root and bin/gitlab-runner-sandbox and bin/bhyve-executor (make test
// builds them); nothing here skips.
package e2e
