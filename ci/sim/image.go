package sim

import "gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/diskimage"

// WriteImage writes, at path, the simulator's stand-in for FreeBSD's
// BASIC-CLOUDINIT VM image: a bhyve-sim disk image (a tar whose first
// member is ".bhyve-sim-image", see ci/sim/README.md) that `vm create -i`
// accepts and that boots like a FreeBSD cloud image: /firstboot,
// nuageinit, sshd generating its host keys, PasswordAuthentication yes.
func WriteImage(path string) error {
	return diskimage.Write(path, diskimage.FreeBSDCloudInit())
}
