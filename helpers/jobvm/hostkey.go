package jobvm

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/cloudinit"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Every clone of a template carries the template's host key, and a job
// with root in its VM can read it: with it, that job's VM could pose as any
// other job's VM at that VM's address and receive its scripts and secrets.
// The host key step therefore gives each clone a key of its own, generated
// here and delivered through the clone's own cloud-init data before `vm
// start` (see helpers/cloudinit), and pins exactly that key for the job.
// Templates that cannot take cloud-init data stay on their pinned key.

// keyHostKey is the NAME.conf key holding the per-VM public key, where a
// later process (bhyve-executor's run stages) finds what to pin.
const keyHostKey = "gitlab_runner_bhyve_host_key"

// Seeds is what the host key step needs from vm-bhyve
// (helpers/vmbhyve.Driver).
type Seeds interface {
	CloudInit(name string) (vmbhyve.CloudInit, error)
	WriteCloudInit(ctx context.Context, name string, files []vmbhyve.SeedFile) error
	SeedBuiltAtStart(ctx context.Context) (bool, string, error)
}

// HostKeyPin says which host key a job's SSH connection trusts: VMKey,
// generated for this VM, when set; otherwise the keys pinned for Template.
type HostKeyPin struct {
	Template string
	VM       string
	VMKey    ssh.PublicKey
}

func (v *VM) pin() HostKeyPin {
	return HostKeyPin{Template: v.Template, VM: v.Name, VMKey: v.HostKey}
}

// hostKey is the "host key" step: between the marker and `vm start`, give
// the clone its own host key, or say why it keeps the template's.
func (m *Manager) hostKey(ctx context.Context, v *VM, logf Logf) error {
	mode := m.Config.HostKeys
	if mode == "" {
		mode = settings.HostKeysAuto
	}
	if mode == settings.HostKeysTemplate {
		logf("Host key: the key pinned for template %s (host_keys = %q)", v.Template, mode)
		return nil
	}
	files, key, why, err := m.perVMSeed(ctx, v)
	if err != nil {
		return fmt.Errorf("host key for %s: %w", v.Name, err)
	}
	if why != "" {
		if mode == settings.HostKeysPerVM {
			return failure.Configf("host key for %s: host_keys = %q, but %s; build the template with `bhyve-executor template build` (vm create -C, nuageinit, /firstboot kept) or set host_keys = %q", v.Name, mode, why, settings.HostKeysTemplate)
		}
		logf("Host key: the key pinned for template %s (host_keys = %q: %s)", v.Template, mode, why)
		return nil
	}
	if err := m.Seeds.WriteCloudInit(ctx, v.Name, files); err != nil {
		return fmt.Errorf("host key for %s: %w", v.Name, err)
	}
	if err := m.VMs.SetConf(ctx, v.Name, keyHostKey+"="+key.AuthorizedKey()); err != nil {
		return fmt.Errorf("host key for %s: record it in the conf: %w", v.Name, err)
	}
	v.HostKey = key.Public
	logf("Host key: per-VM %s, delivered in %s's own cloud-init data; the job trusts this key only (host_keys = %q)", key, v.Name, mode)
	return nil
}

// perVMSeed renders the clone's cloud-init files with a fresh key, or
// says why the clone cannot take them (why != "").
func (m *Manager) perVMSeed(ctx context.Context, v *VM) (_ []vmbhyve.SeedFile, _ *cloudinit.HostKey, why string, _ error) {
	if m.Seeds == nil {
		return nil, nil, "this executor cannot write cloud-init data", nil
	}
	ci, err := m.Seeds.CloudInit(v.Name)
	if err != nil {
		return nil, nil, "", err
	}
	if why, err := PerVMUnready(ctx, m.Seeds, v.Template, ci); why != "" || err != nil {
		return nil, nil, why, err
	}
	key, err := cloudinit.NewHostKey("root@" + v.Name)
	if err != nil {
		return nil, nil, "", err
	}
	rendered, err := cloudinit.Render(cloudinit.Inherited{UserData: ci.UserData, NetworkConfig: ci.NetworkConfig}, v.Name, v.MAC, key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("template %s's cloud-init data: %w", v.Template, err)
	}
	files := make([]vmbhyve.SeedFile, 0, len(rendered))
	for _, f := range rendered {
		files = append(files, vmbhyve.SeedFile{Name: f.Name, Data: f.Data})
	}
	return files, key, "", nil
}

// PerVMUnready says why a clone of template that inherits ci cannot take
// a per-VM host key, or "" when it can. doctor and template check ask it
// about the template's snapshot, the host key step about the clone.
func PerVMUnready(ctx context.Context, seeds Seeds, template string, ci vmbhyve.CloudInit) (string, error) {
	switch {
	case !ci.Dir:
		return fmt.Sprintf("template %s has no .cloud-init/ (it was not created with vm create -C)", template), nil
	case !ci.SeedDisk:
		return fmt.Sprintf("template %s's conf attaches no seed.iso disk", template), nil
	}
	if err := cloudinit.CheckUserData(ci.UserData); err != nil {
		return fmt.Sprintf("template %s's .cloud-init/user-data: %v", template, err), nil
	}
	rebuilt, version, err := seeds.SeedBuiltAtStart(ctx)
	if err != nil {
		return "", err
	}
	if !rebuilt {
		return fmt.Sprintf("vm-bhyve %s does not rebuild seed.iso at vm start (1.7.0 and later do)", version), nil
	}
	return "", nil
}

// hostKeyFromConf reads the per-VM key a Create recorded; nil means the VM
// trusts its template's pin.
func hostKeyFromConf(conf map[string]string) (ssh.PublicKey, error) {
	line := conf[keyHostKey]
	if line == "" {
		return nil, nil
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("%s in the VM's conf: %w", keyHostKey, err)
	}
	return key, nil
}

// perVMAdvice is what a per-VM key mismatch tells the operator: it was
// generated a moment ago, so there is no pin to update.
func perVMAdvice(pin HostKeyPin) string {
	return strings.Join([]string{
		"the pinned key was generated for " + pin.VM + " and delivered in its cloud-init data, so either the guest did not apply it at its first boot",
		"(the template needs nuageinit and /firstboot in its snapshot: `bhyve-executor template check " + pin.Template + "`; or set host_keys = \"template\")",
		"or another machine answers at this address: the job was not sent there",
	}, " ")
}
