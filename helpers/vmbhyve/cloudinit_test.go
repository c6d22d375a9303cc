package vmbhyve

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCloudInitReadsWhatTheCloneInherited(t *testing.T) {
	d, _ := newDriver(t, func([]string) fakeResult { return fakeResult{} })
	mk := func(name, conf string, files map[string]string) {
		dir := filepath.Join(d.VMDir, name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".conf"), []byte(conf), 0o644))
		if files != nil {
			require.NoError(t, os.MkdirAll(filepath.Join(dir, ".cloud-init"), 0o755))
		}
		for f, body := range files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, ".cloud-init", f), []byte(body), 0o644))
		}
	}
	seedConf := "disk0_name=\"disk0.img\"\ndisk1_type=\"ahci-cd\"\ndisk1_name=\"seed.iso\"\n"
	mk("with", seedConf, map[string]string{"user-data": "#cloud-config\n", "meta-data": "x"})
	mk("without", "disk0_name=\"disk0.img\"\n", nil)
	mk("netcfg", seedConf, map[string]string{"user-data": "", "network-config": "version: 2\n"})

	ci, err := d.CloudInit("with")
	require.NoError(t, err)
	assert.Equal(t, CloudInit{Dir: true, SeedDisk: true, UserData: []byte("#cloud-config\n")}, ci)
	ci, err = d.CloudInit("without")
	require.NoError(t, err)
	assert.Equal(t, CloudInit{}, ci)
	ci, err = d.CloudInit("netcfg")
	require.NoError(t, err)
	assert.Equal(t, CloudInit{Dir: true, SeedDisk: true, UserData: []byte{}, NetworkConfig: []byte("version: 2\n")}, ci, "an empty user-data is there, not absent")
	_, err = d.CloudInit("nope")
	assert.ErrorIs(t, err, ErrNotFound)
}

// The exact argv matters: the README's sudoers rules match it.
func TestWriteCloudInitInstallsThroughPrivilegeAndRemovesTheSeed(t *testing.T) {
	var staged map[string]string
	var modes []os.FileMode
	var d *Driver
	d, fake := newDriver(t, func(argv []string) fakeResult {
		if argv[2] == "/usr/bin/install" {
			staged = map[string]string{}
			for _, src := range argv[5 : len(argv)-1] {
				b, err := os.ReadFile(src)
				require.NoError(t, err)
				st, err := os.Stat(src)
				require.NoError(t, err)
				modes = append(modes, st.Mode().Perm())
				staged[filepath.Base(src)] = string(b)
			}
		}
		if argv[2] == "/bin/rm" {
			require.NoError(t, os.Remove(argv[4]))
		}
		return fakeResult{}
	})
	d.Install, d.Rm = []string{"/usr/bin/install"}, []string{"/bin/rm"}
	dir := filepath.Join(d.VMDir, "ci-1")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ".cloud-init"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "seed.iso"), []byte("template's seed"), 0o644))

	err := d.WriteCloudInit(context.Background(), "ci-1", []SeedFile{{"meta-data", []byte("m")}, {"user-data", []byte("PRIVATE")}})
	require.NoError(t, err)
	calls := fake.Calls()
	require.Len(t, calls, 2)
	install := strings.Join(calls[0], " ")
	stage := filepath.Dir(calls[0][5])
	assert.Equal(t, "sudo -n /usr/bin/install -m 0600 "+stage+"/meta-data "+stage+"/user-data "+dir+"/.cloud-init", install)
	assert.Regexp(t, regexp.MustCompile(`/bhyve-ci-seed-[0-9]+$`), stage, "the sudoers rule matches this pattern")
	assert.Equal(t, []string{"sudo", "-n", "/bin/rm", "-f", dir + "/seed.iso"}, calls[1])
	assert.Equal(t, map[string]string{"meta-data": "m", "user-data": "PRIVATE"}, staged)
	assert.Equal(t, []os.FileMode{0o600, 0o600}, modes)
	assert.NoDirExists(t, stage, "the staged private key is gone")

	t.Run("a seed that survives rm fails", func(t *testing.T) {
		d.Rm = []string{"/bin/true-not-rm"}
		require.NoError(t, os.WriteFile(filepath.Join(dir, "seed.iso"), []byte("template's seed"), 0o644))
		err := d.WriteCloudInit(context.Background(), "ci-1", []SeedFile{{"meta-data", nil}, {"user-data", nil}})
		assert.ErrorContains(t, err, "seed.iso is still there")
	})
	t.Run("only seed files", func(t *testing.T) {
		err := d.WriteCloudInit(context.Background(), "ci-1", []SeedFile{{"meta-data", nil}, {"../ci-1.conf", nil}})
		assert.ErrorContains(t, err, `unexpected file "../ci-1.conf"`)
	})
}
