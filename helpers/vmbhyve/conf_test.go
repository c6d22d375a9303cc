package vmbhyve

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeConf(t *testing.T, vmDir, name, content string) string {
	t.Helper()
	dir := filepath.Join(vmDir, name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, name+".conf")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

func TestReadConf(t *testing.T) {
	d, fake := newDriver(t, script(t, nil))
	writeConf(t, d.VMDir, "ci-1", `loader="bhyveload"
cpu=2
memory="4G"   # trailing comment
# network0_mac="58:9c:fc:00:00:99"
  indented="ignored by config::load"
Upper="ignored too"
network0_type="virtio-net"
network0_switch="public"
disk0_name="disk0"
uuid="d4c5a7e2-0000-4000-8000-000000000001"
network0_mac="58:9c:fc:01:02:03"
network0_mac="58:9c:fc:0f:0f:0f"
description="a \"quoted\" value"
novalue
empty=""
`)
	conf, err := d.ReadConf("ci-1")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{
		"loader":          "bhyveload",
		"cpu":             "2",
		"memory":          "4G",
		"network0_type":   "virtio-net",
		"network0_switch": "public",
		"disk0_name":      "disk0",
		"uuid":            "d4c5a7e2-0000-4000-8000-000000000001",
		"network0_mac":    "58:9c:fc:01:02:03", // the first line wins, as in config::get
		"description":     `a \quoted\ value`,  // config::load deletes every '"'
		"empty":           "",
	}, conf)
	assert.Empty(t, fake.Calls(), "reading needs no command and no privilege")

	_, err = d.ReadConf("ci-2")
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, err, fs.ErrNotExist)

	_, err = d.ReadConf("../etc")
	assert.Error(t, err)
}

// sysrcFake does what `sysrc -f FILE k=v ...` does to FILE: replace the last
// line for k, or append k="v" (with echo >>, so without adding a missing
// newline first).
func sysrcFake(t *testing.T) func([]string) fakeResult {
	return func(argv []string) fakeResult {
		i := indexOf(argv, "-f")
		require.GreaterOrEqual(t, i, 0, argv)
		path := argv[i+1]
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if string(data) == "" {
			lines = nil
		}
		var out strings.Builder
		for _, kv := range argv[i+2:] {
			k, v, _ := strings.Cut(kv, "=")
			replaced := false
			for j := len(lines) - 1; j >= 0; j-- {
				if strings.HasPrefix(lines[j], k+"=") {
					lines[j] = k + `="` + v + `"`
					replaced = true
					break
				}
			}
			if !replaced {
				lines = append(lines, k+`="`+v+`"`)
			}
			out.WriteString(k + ": -> " + v + "\n")
		}
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
		return fakeResult{stdout: out.String()}
	}
}

func TestSetConf(t *testing.T) {
	t.Run("one sysrc call with privilege prefix and -f path", func(t *testing.T) {
		d, fake := newDriver(t, sysrcFake(t))
		path := writeConf(t, d.VMDir, "ci-1", "loader=\"bhyveload\"\ncpu=2\n")
		err := d.SetConf(context.Background(), "ci-1", "network0_mac=58:9c:fc:0a:bc:de", "gitlab_runner_bhyve_owner=runner-1/job 42")
		require.NoError(t, err)
		assert.Equal(t, [][]string{{"sudo", "-n", "/usr/sbin/sysrc", "-f", path,
			"network0_mac=58:9c:fc:0a:bc:de", "gitlab_runner_bhyve_owner=runner-1/job 42"}}, fake.Calls())
		conf, err := d.ReadConf("ci-1")
		require.NoError(t, err)
		assert.Equal(t, "58:9c:fc:0a:bc:de", conf["network0_mac"])
		assert.Equal(t, "runner-1/job 42", conf["gitlab_runner_bhyve_owner"])
		assert.Equal(t, "bhyveload", conf["loader"])
	})

	t.Run("without privilege prefix", func(t *testing.T) {
		d, fake := newDriver(t, sysrcFake(t))
		d.Privilege = nil
		path := writeConf(t, d.VMDir, "ci-1", "cpu=2\n")
		require.NoError(t, d.SetConf(context.Background(), "ci-1", "cpu=4"))
		assert.Equal(t, [][]string{{"/usr/sbin/sysrc", "-f", path, "cpu=4"}}, fake.Calls())
	})

	t.Run("refused before running anything", func(t *testing.T) {
		for name, kv := range map[string][]string{
			"no pairs":           nil,
			"not key=value":      {"network0_mac"},
			"upper-case key":     {"Network0_mac=x"},
			"key with dash":      {"network-0=x"},
			"key starting digit": {"0mac=x"},
			"option-like key":    {"-x=y"},
			"double quote":       {`a=b"c`},
			"newline":            {"a=b\nc=d"},
			"carriage return":    {"a=b\r"},
			"dollar":             {"a=$(reboot)"},
			"backtick":           {"a=`reboot`"},
			"backslash":          {`a=b\`},
			"hash":               {"a=b#c"},
			"trailing space":     {"a=b "},
			"key twice":          {"a=1", "a=2"},
		} {
			t.Run(name, func(t *testing.T) {
				d, fake := newDriver(t, sysrcFake(t))
				writeConf(t, d.VMDir, "ci-1", "cpu=2\n")
				assert.Error(t, d.SetConf(context.Background(), "ci-1", kv...))
				assert.Empty(t, fake.Calls())
			})
		}
	})

	t.Run("missing conf is ErrNotFound and is not created", func(t *testing.T) {
		d, fake := newDriver(t, sysrcFake(t))
		require.NoError(t, os.MkdirAll(filepath.Join(d.VMDir, "ci-1"), 0o755))
		err := d.SetConf(context.Background(), "ci-1", "a=b")
		assert.ErrorIs(t, err, ErrNotFound)
		assert.Empty(t, fake.Calls())
		assert.NoFileExists(t, filepath.Join(d.VMDir, "ci-1", "ci-1.conf"))
	})

	t.Run("conf without final newline is refused", func(t *testing.T) {
		d, fake := newDriver(t, sysrcFake(t))
		writeConf(t, d.VMDir, "ci-1", `cpu=2`)
		err := d.SetConf(context.Background(), "ci-1", "network0_mac=58:9c:fc:00:00:01")
		assert.ErrorContains(t, err, "does not end with a newline")
		assert.Empty(t, fake.Calls())
	})

	t.Run("duplicate key: sysrc changes the last, vm-bhyve reads the first", func(t *testing.T) {
		d, _ := newDriver(t, sysrcFake(t))
		writeConf(t, d.VMDir, "ci-1", "network0_mac=\"58:9c:fc:00:00:01\"\nnetwork0_mac=\"58:9c:fc:00:00:02\"\n")
		err := d.SetConf(context.Background(), "ci-1", "network0_mac=58:9c:fc:00:00:03")
		require.Error(t, err)
		assert.Contains(t, err.Error(), `vm-bhyve would read network0_mac="58:9c:fc:00:00:01" instead of "58:9c:fc:00:00:03"`)
	})

	t.Run("sysrc failure quotes sysrc", func(t *testing.T) {
		d, _ := newDriver(t, func([]string) fakeResult {
			return fakeResult{stderr: "sysrc: cannot create /vm/ci-1/ci-1.conf: Read-only file system\n", code: 1}
		})
		writeConf(t, d.VMDir, "ci-1", "cpu=2\n")
		err := d.SetConf(context.Background(), "ci-1", "a=b")
		assert.ErrorContains(t, err, "Read-only file system")
		assert.ErrorContains(t, err, "/usr/sbin/sysrc -f")
	})

	t.Run("sysrc behind sudo without a rule", func(t *testing.T) {
		d, _ := newDriver(t, func([]string) fakeResult {
			return fakeResult{stderr: "sudo: a password is required\n", code: 1}
		})
		writeConf(t, d.VMDir, "ci-1", "cpu=2\n")
		err := d.SetConf(context.Background(), "ci-1", "a=b")
		assert.ErrorIs(t, err, ErrPrivilege)
		assert.ErrorContains(t, err, "NOPASSWD: /usr/sbin/sysrc")
	})
}
