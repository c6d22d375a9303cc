package main_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/customexec"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// fakeRunner writes a host "gitlab-runner" that reports version v, as the
// real one's --version does ("Version:      17.5.0").
func fakeRunner(t *testing.T, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gitlab-runner")
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\necho 'Version:      "+v+"'\necho 'OS/Arch:      linux/amd64'\n"), 0o755))
	return p
}

// templateHarness is a simulated host whose runner lets jobs select
// template "fbsd" (image: fbsd), built by the test, at its newest build
// snapshot. The settings stay as they are from build to job: build pins
// the key in the known_hosts file they name.
func templateHarness(t *testing.T) (*harness, string, string) {
	t.Helper()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	h := newHarness(t, `allowed_images = ["fbsd"]`, `snapshot = "latest"`, `ssh.user = "gitlab-runner"`, `ssh.known_hosts_file = "`+kh+`"`)
	// The default template's pin, which the settings require.
	pins, err := os.ReadFile(h.sim.KnownHostsPath())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(kh, pins, 0o644))
	img := filepath.Join(t.TempDir(), "FreeBSD-14.2-RELEASE-amd64-BASIC-CLOUDINIT.img")
	require.NoError(t, sim.WriteImage(img))
	return h, img, kh
}

// TestTemplateBuildThenJob: from nothing but an image file, template build
// gives a template a job runs on through the Custom executor, with the
// guest's gitlab-runner the host's, and template check passes.
func TestTemplateBuildThenJob(t *testing.T) {
	h, img, kh := templateHarness(t)
	rb := fakeRunner(t, "17.5.0")

	out, _, code := operator(t, h.sim, h.sim.SettingsPath, "template", "build", "fbsd", "--image", img, "--runner-binary", rb, "--dry-run")
	require.Equal(t, 0, code)
	assert.Contains(t, out, h.sim.VMCommand()+" create -t default -s 20G -m 2G -c 2 -i "+img+" -C -k PUBKEY-FILE fbsd\n")
	assert.Contains(t, out, h.sim.VMCommand()+" snapshot fbsd@build-")
	list, err := h.sim.VM(context.Background(), "list")
	require.NoError(t, err)
	assert.NotContains(t, list.Stdout, "fbsd", "a dry run creates nothing")

	out, _, code = operator(t, h.sim, h.sim.SettingsPath, "template", "build", "fbsd", "--image", img, "--runner-binary", rb)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "provision: gitlab-runner 17.5.0")
	assert.Contains(t, out, `snapshot = "latest"`)
	pinned, err := os.ReadFile(kh)
	require.NoError(t, err)
	assert.Contains(t, string(pinned), "\nfbsd ssh-ed25519 ", "pinned: %q", pinned)
	disk := filepath.Join(h.sim.VMDir(), "fbsd", "disk0.img")
	for _, p := range []string{"firstboot", "usr/local/bin/gitlab-runner"} {
		assert.FileExists(t, filepath.Join(disk, p))
	}
	for _, p := range []string{"builds", "cache", "home/gitlab-runner/.ssh"} {
		assert.DirExists(t, filepath.Join(disk, p))
	}
	sshd, err := os.ReadFile(filepath.Join(disk, "etc/ssh/sshd_config"))
	require.NoError(t, err)
	assert.Contains(t, string(sshd), "PasswordAuthentication no\n")
	assert.NotContains(t, string(sshd), "PasswordAuthentication yes")

	var log bytes.Buffer
	res, err := h.runner.Run(context.Background(), customexec.Job{
		ID: 2001, Image: "fbsd", Stages: stages("id -un && gitlab-runner --version | head -1 && test -w /cache && echo cache ok\n"),
	}, &log)
	require.NoError(t, err)
	t.Logf("job log:\n%s", log.String())
	assert.Equal(t, customexec.NoFailure, res.Failure)
	assert.Contains(t, log.String(), "Cloning fbsd@build-")
	assert.Contains(t, log.String(), "gitlab-runner\nVersion:      17.5.0\ncache ok")
	assert.Contains(t, log.String(), "Host key: per-VM ssh-ed25519 SHA256:", "a template build makes templates ready for per-VM keys")

	out, _, code = operator(t, h.sim, h.sim.SettingsPath, "template", "check", "fbsd", "--runner-binary", rb)
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "[ ok ] gitlab-runner: ")
	assert.Contains(t, out, "[ ok ] host keys: per-VM: clones of fbsd@build-")
	assert.Contains(t, out, "[ ok ] per-VM host key: ci-check-")
	assert.Contains(t, out, "all checks passed\n")

	out, _, code = operator(t, h.sim, h.sim.SettingsPath, "template", "check", "fbsd", "--runner-binary", fakeRunner(t, "17.6.0"))
	assert.Equal(t, 0, code, "a version mismatch is a warning")
	assert.Contains(t, out, "[WARN] gitlab-runner: guest has 17.5.0, host runs 17.6.0: artifacts and caches will not work\n       fix: ")
}
