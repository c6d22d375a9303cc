package cloudinit_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/cloudinit"
)

// vmBhyveUserData is what core::create_cloud_init writes for `vm create -C
// -k KEY` (lib/vm-core).
const vmBhyveUserData = "#cloud-config\nresize_rootfs: True\nmanage_etc_hosts: localhost\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample runner\n"

// vmBhyveNetworkConfig is core::compile_network_config for -n "interface=vtnet0".
const vmBhyveNetworkConfig = "version: 2\nethernets:\n  id0:\n    match:\n      macaddress: 58:9c:fc:01:02:03\n    set-name: vtnet0\n    dhcp4: true\n"

func files(t *testing.T, fs []cloudinit.File) map[string]string {
	t.Helper()
	out := map[string]string{}
	var names []string
	for _, f := range fs {
		out[f.Name] = string(f.Data)
		names = append(names, f.Name)
	}
	require.Equal(t, []string{cloudinit.MetaData, cloudinit.UserData}, names[:2], "meta-data and user-data come first")
	return out
}

func TestRenderGivesTheCloneItsHostKeyAndKeepsTheTemplatesUserData(t *testing.T) {
	mac, _ := net.ParseMAC("58:9c:fc:0a:bc:de")
	tests := []struct {
		name      string
		inherited string
		keep      map[string]any // keys of the inherited user-data that must survive
	}{
		{"vm-bhyve's generated user-data", vmBhyveUserData, map[string]any{"resize_rootfs": true, "manage_etc_hosts": "localhost"}},
		{"no user-data", "", nil},
		{"operator's user-data with old ssh_keys", "#cloud-config\nruncmd:\n  - echo hi\nssh_keys:\n  ed25519_private: OLD\n  rsa_private: OLDRSA\n", map[string]any{"runcmd": []any{"echo hi"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := cloudinit.NewHostKey("root@ci-1")
			require.NoError(t, err)
			fs, err := cloudinit.Render(cloudinit.Inherited{UserData: []byte(tt.inherited)}, "ci-1", mac, key)
			require.NoError(t, err)
			got := files(t, fs)
			assert.NotContains(t, got, cloudinit.NetworkConfig, "none inherited, none written")

			ud := got[cloudinit.UserData]
			assert.True(t, strings.HasPrefix(ud, "#cloud-config\n"), "nuageinit reads only #cloud-config user-data: %q", ud)
			assert.Equal(t, 1, strings.Count(ud, "#cloud-config"))
			var doc map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(ud), &doc))
			for k, v := range tt.keep {
				assert.Equal(t, v, doc[k], k)
			}
			if strings.Contains(tt.inherited, "ssh_authorized_keys") {
				assert.Len(t, doc["ssh_authorized_keys"], 1)
			}
			sk, ok := doc["ssh_keys"].(map[string]any)
			require.True(t, ok, "ssh_keys mapping in %q", ud)
			assert.Len(t, sk, 2, "only the ed25519 pair; an inherited key of another type is not kept: %v", sk)

			// The private half is an OpenSSH key whose public half is the one
			// the job will pin, and the public line is that key.
			signer, err := ssh.ParsePrivateKey([]byte(sk["ed25519_private"].(string)))
			require.NoError(t, err)
			assert.Equal(t, key.Public.Marshal(), signer.PublicKey().Marshal())
			pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sk["ed25519_public"].(string)))
			require.NoError(t, err)
			assert.Equal(t, key.Public.Marshal(), pub.Marshal())
			assert.True(t, strings.HasSuffix(sk["ed25519_private"].(string), "\n"), "sshd wants the key file to end with a newline")

			var meta map[string]string
			require.NoError(t, yaml.Unmarshal([]byte(got[cloudinit.MetaData]), &meta))
			assert.Equal(t, "ci-1", meta["local-hostname"])
			assert.True(t, strings.HasPrefix(meta["instance-id"], "iid-ci-1-"), meta["instance-id"])
		})
	}
}

func TestRenderIsFreshPerClone(t *testing.T) {
	mac, _ := net.ParseMAC("58:9c:fc:0a:bc:de")
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		key, err := cloudinit.NewHostKey("root@ci-1")
		require.NoError(t, err)
		fs, err := cloudinit.Render(cloudinit.Inherited{UserData: []byte(vmBhyveUserData)}, "ci-1", mac, key)
		require.NoError(t, err)
		got := files(t, fs)
		for _, v := range []string{key.AuthorizedKey(), got[cloudinit.MetaData]} {
			assert.False(t, seen[v], "repeated across clones: %s", v)
			seen[v] = true
		}
	}
}

func TestRenderPointsTheInheritedNetworkConfigAtTheClonesMAC(t *testing.T) {
	mac, _ := net.ParseMAC("58:9c:fc:0a:bc:de")
	tests := []struct {
		name, in string
		wantMAC  string // "" means the file is passed on unchanged
	}{
		{"vm-bhyve v2 at the top", vmBhyveNetworkConfig, "58:9c:fc:0a:bc:de"},
		{"v2 under network:", "network:\n  version: 2\n  ethernets:\n    id0:\n      match:\n        macaddress: 58:9c:fc:01:02:03\n      dhcp4: true\n", "58:9c:fc:0a:bc:de"},
		{"two ethernets: not ours to pick", "version: 2\nethernets:\n  a:\n    match:\n      macaddress: 58:9c:fc:01:02:03\n  b:\n    match:\n      macaddress: 58:9c:fc:01:02:04\n", ""},
		{"match by name", "version: 2\nethernets:\n  id0:\n    match:\n      name: vtnet0\n    dhcp4: true\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := cloudinit.NewHostKey("root@ci-1")
			require.NoError(t, err)
			fs, err := cloudinit.Render(cloudinit.Inherited{UserData: []byte(vmBhyveUserData), NetworkConfig: []byte(tt.in)}, "ci-1", mac, key)
			require.NoError(t, err)
			nc := files(t, fs)[cloudinit.NetworkConfig]
			if tt.wantMAC == "" {
				assert.Equal(t, tt.in, nc)
				return
			}
			assert.Contains(t, nc, "macaddress: "+tt.wantMAC)
			assert.NotContains(t, nc, "58:9c:fc:01:02:03")
			var doc map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(nc), &doc), nc)
		})
	}
}

func TestRenderRefusesUserDataNuageinitWouldNotParse(t *testing.T) {
	mac, _ := net.ParseMAC("58:9c:fc:0a:bc:de")
	key, err := cloudinit.NewHostKey("root@ci-1")
	require.NoError(t, err)
	for _, in := range []string{"#!/bin/sh\necho hi\n", "users: []\n"} {
		_, err := cloudinit.Render(cloudinit.Inherited{UserData: []byte(in)}, "ci-1", mac, key)
		assert.True(t, errors.Is(err, cloudinit.ErrNotCloudConfig), "%q: %v", in, err)
	}
	_, err = cloudinit.Render(cloudinit.Inherited{UserData: []byte("#cloud-config\n- a list\n")}, "ci-1", mac, key)
	assert.ErrorContains(t, err, "not a YAML mapping")
}

func TestHostKeyPrintsNoSecret(t *testing.T) {
	key, err := cloudinit.NewHostKey("root@ci-1")
	require.NoError(t, err)
	for _, s := range []string{key.String(), key.GoString()} {
		assert.NotContains(t, s, "PRIVATE")
		assert.Contains(t, s, ssh.FingerprintSHA256(key.Public))
	}
}
