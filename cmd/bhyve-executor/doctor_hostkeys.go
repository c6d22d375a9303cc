package main

import (
	"context"
	"fmt"
	"os/exec"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// readyFix is how to make a template ready for per-VM host keys.
func readyFix(s *settings.Settings, tmpl string) string {
	return fmt.Sprintf("build the template with `bhyve-executor template build %s --image FILE` (vm create -C: .cloud-init/ and a seed disk; the provisioning keeps nuageinit and touches /firstboot last), or set host_keys = %q in %s to accept the key every clone shares",
		tmpl, settings.HostKeysTemplate, s.Path)
}

// doctorHostKeys says which host key jobs of tmpl will trust, from what
// its snapshot gives every clone. Whether the guest applies the key
// (nuageinit, /firstboot) only a boot can tell: see checkClone.
func doctorHostKeys(ctx context.Context, c *checks, s *settings.Settings, d *vmbhyve.Driver, tmpl string) {
	const name = "host keys"
	if s.HostKeys == settings.HostKeysTemplate {
		c.warn(name, fmt.Sprintf("host_keys = %q: every job VM presents %s's key, which a job with root can read and use to pose as another job's VM", s.HostKeys, tmpl),
			fmt.Sprintf("make the template ready for per-VM keys (bhyve-executor template build) and set host_keys = %q", settings.HostKeysAuto))
		return
	}
	snap, err := d.ResolveSnapshot(tmpl, s.Snapshot)
	if err != nil {
		return // the snapshot check has said so
	}
	ci, err := d.SnapshotCloudInit(tmpl, snap)
	if err != nil {
		c.fail(name, err.Error(), "")
		return
	}
	why, err := jobvm.PerVMUnready(ctx, d, tmpl, ci)
	switch {
	case err != nil:
		c.fail(name, err.Error(), "")
		return
	case why != "" && s.HostKeys == settings.HostKeysPerVM:
		c.fail(name, fmt.Sprintf("host_keys = %q, but %s", s.HostKeys, why), readyFix(s, tmpl))
		return
	case why != "":
		c.warn(name, fmt.Sprintf("host_keys = %q falls back to %s's shared key: %s", s.HostKeys, tmpl, why), readyFix(s, tmpl))
		return
	}
	for _, argv := range [][]string{s.InstallCommand, s.RmCommand} {
		if _, err := exec.LookPath(argv[0]); err != nil {
			c.fail(name, err.Error(), "set install_command and rm_command to install(1) and rm(1) (FreeBSD: /usr/bin/install, /bin/rm), and allow them in sudoers as the README shows")
			return
		}
	}
	c.ok(name, "per-VM: clones of %s@%s inherit .cloud-init/ and a seed disk, and vm start rebuilds the seed; each gets its own ed25519 key via %s and %s (the guest must apply it at first boot: nuageinit and /firstboot, checked by a test boot)",
		tmpl, snap, s.InstallCommand[0], s.RmCommand[0])
}

// checkCloneHostKey reports what a test clone proved about host keys.
func checkCloneHostKey(c *checks, vm *jobvm.VM) {
	if vm.HostKey == nil {
		return // doctorHostKeys has said why
	}
	c.ok("per-VM host key", "%s presented its own fresh key %s: nuageinit applied ssh_keys at its first boot", vm.Name, ssh.FingerprintSHA256(vm.HostKey))
}
