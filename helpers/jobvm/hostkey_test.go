package jobvm

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// fakeSeeds is a clone's inherited cloud-init as vmbhyve.Driver reports it,
// and what the step wrote.
type fakeSeeds struct {
	ci      vmbhyve.CloudInit
	rebuilt bool

	mu      sync.Mutex
	written map[string][]vmbhyve.SeedFile
}

func (f *fakeSeeds) CloudInit(string) (vmbhyve.CloudInit, error) { return f.ci, nil }

func (f *fakeSeeds) WriteCloudInit(_ context.Context, name string, files []vmbhyve.SeedFile) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.written == nil {
		f.written = map[string][]vmbhyve.SeedFile{}
	}
	f.written[name] = files
	return nil
}

func (f *fakeSeeds) SeedBuiltAtStart(context.Context) (bool, string, error) {
	if f.rebuilt {
		return true, "1.7.5", nil
	}
	return false, "1.6-devel", nil
}

var seedable = vmbhyve.CloudInit{Dir: true, SeedDisk: true, UserData: []byte("#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA x\n")}

func TestHostKeyStepPinsTheKeyItDelivered(t *testing.T) {
	hv, sshc := newFakeHypervisor("tmpl"), &fakeSSH{}
	m := newManager(hv, goodLeases(), sshc)
	seeds := &fakeSeeds{ci: seedable, rebuilt: true}
	m.Seeds = seeds
	var log strings.Builder
	vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = vm.Close(context.Background()) })

	require.NotNil(t, vm.HostKey)
	require.Len(t, sshc.pins, 1)
	assert.Equal(t, vm.HostKey, sshc.pins[0].VMKey, "the connection pins the generated key")

	// The private half the guest gets is the pinned key's.
	files := seeds.written[vmName]
	require.Len(t, files, 2)
	var ud struct {
		Keys map[string]string `yaml:"ssh_keys"`
	}
	require.NoError(t, yaml.Unmarshal(files[1].Data, &ud))
	signer, err := ssh.ParsePrivateKey([]byte(ud.Keys["ed25519_private"]))
	require.NoError(t, err)
	assert.Equal(t, vm.HostKey.Marshal(), signer.PublicKey().Marshal())

	// Written before start, and recorded in the conf for later stages.
	calls := hv.Calls()
	require.Len(t, calls, 4)
	assert.Contains(t, calls[2], keyHostKey+"=ssh-ed25519 ")
	assert.Equal(t, "start "+vmName, calls[3])
	conf, err := hv.ReadConf(vmName)
	require.NoError(t, err)
	fromConf, err := hostKeyFromConf(conf)
	require.NoError(t, err)
	assert.Equal(t, vm.HostKey.Marshal(), fromConf.Marshal())

	assert.Contains(t, log.String(), "Host key: per-VM ssh-ed25519 SHA256:")
	assert.NotContains(t, log.String(), "PRIVATE KEY")
}

func TestHostKeyStepModes(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		seeds   *fakeSeeds
		wantLog string // "" means a configuration error
		wantErr string
	}{
		{"template mode never writes", settings.HostKeysTemplate, &fakeSeeds{ci: seedable, rebuilt: true}, `the key pinned for template tmpl (host_keys = "template")`, ""},
		{"auto without .cloud-init", settings.HostKeysAuto, &fakeSeeds{rebuilt: true}, "template tmpl has no .cloud-init/", ""},
		{"auto without seed disk", "", &fakeSeeds{ci: vmbhyve.CloudInit{Dir: true}, rebuilt: true}, "attaches no seed.iso disk", ""},
		{"auto on vm-bhyve 1.6", settings.HostKeysAuto, &fakeSeeds{ci: seedable}, "vm-bhyve 1.6-devel does not rebuild seed.iso", ""},
		{"auto with script user-data", settings.HostKeysAuto, &fakeSeeds{ci: vmbhyve.CloudInit{Dir: true, SeedDisk: true, UserData: []byte("#!/bin/sh\n")}, rebuilt: true}, "not a #cloud-config document", ""},
		{"per-vm without .cloud-init", settings.HostKeysPerVM, &fakeSeeds{rebuilt: true}, "", `host_keys = "per-vm", but template tmpl has no .cloud-init/`},
		{"per-vm on vm-bhyve 1.6", settings.HostKeysPerVM, &fakeSeeds{ci: seedable}, "", "does not rebuild seed.iso at vm start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hv, sshc := newFakeHypervisor("tmpl"), &fakeSSH{}
			m := newManager(hv, goodLeases(), sshc)
			m.Seeds, m.Config.HostKeys = tt.seeds, tt.mode
			var log strings.Builder
			vm, err := m.Create(context.Background(), Job{ID: 42, Slot: 3}, func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) })
			assert.Empty(t, tt.seeds.written, "nothing written")
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Equal(t, failure.Config, failure.KindOf(err))
				assert.ErrorContains(t, err, tt.wantErr)
				assert.False(t, hv.Has(vmName), "the clone is destroyed")
				assert.Empty(t, sshc.pins, "never connected")
				return
			}
			require.NoError(t, err)
			t.Cleanup(func() { _ = vm.Close(context.Background()) })
			assert.Nil(t, vm.HostKey)
			require.Len(t, sshc.pins, 1)
			assert.Nil(t, sshc.pins[0].VMKey, "the template's pin")
			assert.Equal(t, "tmpl", sshc.pins[0].Template)
			assert.Contains(t, log.String(), "Host key: the key pinned for template tmpl")
			assert.Contains(t, log.String(), tt.wantLog)
		})
	}
}
