package settings

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
)

func TestLoadFullFile(t *testing.T) {
	f := newFixture(t)
	f.write(t, "keys/runner", string(f.identity.private), 0o600)
	path := f.settings(t, `
[runners."ci-1"]
template = "freebsd-14"
snapshot = "runner"
allowed_images = ["freebsd-1[45]", "openbsd-.*"]
vm_command = ["/opt/vm-bhyve/vm"]
sysrc_command = ["/usr/sbin/sysrc", "-q"]
sysctl_command = ["/sbin/sysctl"]
privilege = ["/usr/local/bin/doas", "-n"]
isolation = false
arp_command = ["/usr/sbin/arp"]
ifconfig_command = ["/usr/local/sbin/ifconfig"]
vm_dir = "/zroot/vm/"
lease_file = "/var/db/kea/leases.csv"
name_prefix = "job_"
host_id = "bhyve01.example.org"
boot_timeout = "4m"
ssh_connect_timeout = "5s"
stop_timeout = "1m"
kill_grace = "3s"
builds_dir = "/home/ci/builds"
cache_dir = "/var/cache/ci"
shell = "sh"
max_cpus = 8
max_memory = "16G"
memory_reserve = "2048M"

[runners."ci-1".ssh]
user = "root"
port = 2222
identity_file = "keys/runner"
host_key = "`+f.hostKey.line+` root@template"
keepalive_interval = "20s"
insecure_skip_host_key_check = false

[runners."ci-1".pool]
idle_count = 2
idle_time = "10m"
max_use_count = 3
max_concurrent_boots = 4
`)
	s, err := Load(path, "ci-1")
	require.NoError(t, err)

	got := *s
	got.d = nil
	assert.Equal(t, Settings{
		RunnerName:        "ci-1",
		Path:              path,
		Template:          "freebsd-14",
		Snapshot:          "runner",
		AllowedImages:     []string{"freebsd-1[45]", "openbsd-.*"},
		VMCommand:         []string{"/opt/vm-bhyve/vm"},
		SysrcCommand:      []string{"/usr/sbin/sysrc", "-q"},
		ZFSCommand:        []string{"/sbin/zfs"},
		SysctlCommand:     []string{"/sbin/sysctl"},
		InstallCommand:    []string{"/usr/bin/install"},
		RmCommand:         []string{"/bin/rm"},
		HostKeys:          HostKeysAuto,
		Privilege:         []string{"/usr/local/bin/doas", "-n"},
		Isolation:         false,
		ArpCommand:        []string{"/usr/sbin/arp"},
		IfconfigCommand:   []string{"/usr/local/sbin/ifconfig"},
		VMDir:             "/zroot/vm",
		LeaseFile:         "/var/db/kea/leases.csv",
		NamePrefix:        "job_",
		HostID:            "bhyve01.example.org",
		BootTimeout:       4 * time.Minute,
		SSHConnectTimeout: 5 * time.Second,
		StopTimeout:       time.Minute,
		KillGrace:         3 * time.Second,
		BuildsDir:         "/home/ci/builds",
		CacheDir:          "/var/cache/ci",
		Shell:             "sh",
		MaxCPUs:           8,
		MaxMemory:         16 << 30,
		MemoryReserve:     2 << 30,
		SSH: SSH{
			User:              "root",
			Port:              2222,
			IdentityFile:      filepath.Join(f.dir, "keys/runner"),
			HostKey:           f.hostKey.line + " root@template",
			KeepAliveInterval: 20 * time.Second,
		},
		Pool: Pool{IdleCount: 2, IdleTime: 10 * time.Minute, MaxUseCount: 3, MaxConcurrentBoots: 4},
	}, got)

	assert.Equal(t, "sh -l", s.ShellCommand())
	assert.Equal(t, []string{"/usr/local/bin/doas", "-n", "/opt/vm-bhyve/vm", "clone", "freebsd-14@runner", "job_1"},
		s.VMArgv("clone", "freebsd-14@runner", "job_1"))
	assert.Equal(t, []string{"/usr/local/bin/doas", "-n", "/usr/sbin/sysrc", "-q", "-f", "x.conf", "network0_mac=58:9c:fc:00:00:01"},
		s.SysrcArgv("-f", "x.conf", "network0_mac=58:9c:fc:00:00:01"))

	signers, err := s.Signers()
	require.NoError(t, err)
	require.Len(t, signers, 1)
	assert.Equal(t, f.identity.pub.Marshal(), signers[0].PublicKey().Marshal())

	keys, err := s.HostKeysFor("openbsd-7")
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assert.Equal(t, f.hostKey.pub.Marshal(), keys[0].Marshal(), "host_key pins every template")
}

func TestBuiltinDefaults(t *testing.T) {
	f := newFixture(t)
	s, err := Load(f.settings(t, minimal), "ci-1")
	require.NoError(t, err)
	host, err := os.Hostname()
	require.NoError(t, err)

	assert.Equal(t, "base", s.Snapshot)
	assert.Empty(t, s.AllowedImages)
	assert.Equal(t, []string{"/usr/local/sbin/vm"}, s.VMCommand)
	assert.Equal(t, []string{"/usr/sbin/sysrc"}, s.SysrcCommand)
	assert.Equal(t, []string{"/usr/local/bin/sudo", "-n"}, s.Privilege)
	assert.Equal(t, "/vm", s.VMDir)
	assert.Equal(t, "/var/db/kea/kea-leases4.csv", s.LeaseFile)
	assert.Equal(t, "ci-", s.NamePrefix)
	assert.Equal(t, host, s.HostID)
	assert.Equal(t, 3*time.Minute, s.BootTimeout)
	assert.Equal(t, 10*time.Second, s.SSHConnectTimeout)
	assert.Equal(t, 30*time.Second, s.StopTimeout)
	assert.Equal(t, 10*time.Second, s.KillGrace)
	assert.Equal(t, "/builds", s.BuildsDir)
	assert.Equal(t, "/cache", s.CacheDir)
	assert.Equal(t, "bash", s.Shell)
	assert.Equal(t, "bash -l", s.ShellCommand())
	assert.Empty(t, s.SysctlCommand, "the kernel is asked directly")
	assert.Zero(t, s.MaxCPUs, "unset: the template's cpu")
	assert.Zero(t, s.MaxMemory, "unset: the template's memory")
	assert.Equal(t, hostmem.GiB, s.MemoryReserve)
	assert.Equal(t, s.Path+`: runners."ci-1".max_memory`, s.Where("max_memory"))
	assert.Equal(t, SSH{
		User:              "gitlab-runner",
		Port:              22,
		IdentityFile:      filepath.Join(f.dir, "id_ed25519"),
		KnownHostsFile:    filepath.Join(f.dir, "known_hosts"),
		KeepAliveInterval: 15 * time.Second,
	}, s.SSH)
	assert.Equal(t, Pool{IdleCount: 0, IdleTime: 30 * time.Minute, MaxUseCount: 1, MaxConcurrentBoots: 2}, s.Pool)
	assert.Equal(t, []string{"/usr/local/bin/sudo", "-n", "/usr/local/sbin/vm", "list"}, s.VMArgv("list"))
}

func TestRunnerOverridesDefaultsKeyByKey(t *testing.T) {
	f := newFixture(t)
	path := f.settings(t, `
[defaults]
template = "freebsd-14"
boot_timeout = "4m"
shell = "sh"
allowed_images = ["freebsd-.*"]
[defaults.ssh]
identity_file = "id_ed25519"
known_hosts_file = "known_hosts"
port = 2200
user = "ci"
[defaults.pool]
idle_count = 3
idle_time = "5m"

[runners."ci-1"]
boot_timeout = "5m"
[runners."ci-1".ssh]
user = "root"
[runners."ci-1".pool]
max_use_count = 2

[runners."ci-2"]
allowed_images = []
`)
	s, err := Load(path, "ci-1")
	require.NoError(t, err)
	assert.Equal(t, 5*time.Minute, s.BootTimeout, "runner value wins")
	assert.Equal(t, "sh", s.Shell, "[defaults] value kept")
	assert.Equal(t, 30*time.Second, s.StopTimeout, "built-in default kept")
	assert.Equal(t, []string{"freebsd-.*"}, s.AllowedImages)
	assert.Equal(t, "root", s.SSH.User, "sub-table key overridden")
	assert.Equal(t, 2200, s.SSH.Port, "sibling sub-table key kept")
	assert.Equal(t, filepath.Join(f.dir, "id_ed25519"), s.SSH.IdentityFile)
	assert.Equal(t, Pool{IdleCount: 3, IdleTime: 5 * time.Minute, MaxUseCount: 2, MaxConcurrentBoots: 2}, s.Pool)

	s2, err := Load(path, "ci-2")
	require.NoError(t, err)
	assert.Equal(t, 4*time.Minute, s2.BootTimeout)
	assert.Equal(t, "ci", s2.SSH.User)
	assert.Empty(t, s2.AllowedImages, "an empty array overrides a non-empty default")
	assert.Equal(t, 1, s2.Pool.MaxUseCount)
}

func TestRunnerSelection(t *testing.T) {
	f := newFixture(t)
	two := minimal + "\n[runners.\"ci 2\"]\nboot_timeout = \"1m\"\n"
	cases := []struct {
		name, file, runner string
		wantRunner         string
		wantErr            string
	}{
		{name: "named", file: two, runner: "ci 2", wantRunner: "ci 2"},
		{name: "only section without a name", file: minimal, runner: "", wantRunner: "ci-1"},
		{
			name: "several sections without a name", file: two, runner: "",
			wantErr: `FILE: runners: several sections ("ci 2", "ci-1") and no runner name to choose between them; expected the caller to pass the runner's name`,
		},
		{
			name: "missing name lists the others", file: two, runner: "ci-3",
			wantErr: `FILE: runners."ci-3": no such section; this file has sections for "ci 2", "ci-1" (sections are named after the runner's name in config.toml; an empty section inherits [defaults])`,
		},
		{
			name: "no runner sections with a name", file: "[defaults]\ntemplate = \"freebsd-14\"\n", runner: "ci-1",
			wantErr: `FILE: runners."ci-1": no such section and no runner sections at all; expected a [runners."ci-1"] section (sections are named after the runner's name in config.toml; an empty section inherits [defaults])`,
		},
		{
			name: "no runner sections without a name", file: "[defaults]\ntemplate = \"freebsd-14\"\n", runner: "",
			wantErr: `FILE: runners: no [runners."NAME"] section; expected one (sections are named after the runner's name in config.toml; an empty section inherits [defaults])`,
		},
		{
			name: "config.toml array syntax", file: "[[runners]]\nname = \"ci-1\"\n", runner: "ci-1",
			wantErr: `FILE: runners: [[runners]] is config.toml syntax; expected [runners."NAME"] sections named after each runner's name in config.toml`,
		},
		{
			name: "runner section is not a table", file: minimal + "[runners]\nci-2 = 5\n", runner: "ci-2",
			wantErr: `FILE: runners."ci-2": is an integer value; expected a table [runners."ci-2"]`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Load(f.settings(t, tc.file), tc.runner)
			if tc.wantErr != "" {
				requireConfigError(t, err, f.expand(tc.wantErr))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantRunner, s.RunnerName)
		})
	}

	names, err := RunnerNames(f.settings(t, two))
	require.NoError(t, err)
	assert.Equal(t, []string{"ci 2", "ci-1"}, names)
}

// TestBadValues sets one bad value in the runner's section (or in [defaults])
// of an otherwise valid file and checks the whole message.
func TestBadValues(t *testing.T) {
	const durErr = `expected a duration such as "90s", "3m" or "1h30m"`
	const nameErr = `expected a vm-bhyve VM name: lowercase letters, digits, '_' and '-', starting with a letter or digit, no '.', at most 229 characters`
	const reErr = `expected regular expressions (RE2 syntax) matched against the whole image name`
	const prefixErr = `expected 1 to 32 of lowercase letters, digits, '_' and '-', starting with a letter or digit (vm-bhyve's name charset without '.')`
	const snapErr = `expected a ZFS snapshot name: letters, digits, '_', '.', ':' and '-', starting with a letter, digit or '_', at most 200 characters`
	R := `FILE: runners."ci-1".`
	cases := []struct {
		name, line, want string
		inDefaults       bool
	}{
		{"template uppercase", `template = "Freebsd"`, R + `template: "Freebsd" is not a valid name; ` + nameErr, false},
		{"template dot", `template = "freebsd.14"`, R + `template: "freebsd.14" is not a valid name; ` + nameErr, false},
		{"template not a string", `template = 14`, R + `template: 14 is an integer, not a string; ` + nameErr, false},
		{"snapshot in defaults", `snapshot = "-rf"`, `FILE: defaults.snapshot: "-rf" is not valid; ` + snapErr, true},
		{"template under name_prefix", `template = "ci-freebsd"`, R + `template: "ci-freebsd" starts with name_prefix "ci-", which marks the VMs this executor creates and destroys; expected a template name outside that prefix, or another name_prefix`, false},
		{"snapshot leading dash", `snapshot = "-x"`, R + `snapshot: "-x" is not valid; ` + snapErr, false},
		{"snapshot with at", `snapshot = "a@b"`, R + `snapshot: "a@b" is not valid; ` + snapErr, false},
		{"allowed_images string", `allowed_images = "freebsd"`, R + `allowed_images: "freebsd" is a string, not an array of strings; ` + reErr, false},
		{"allowed_images bad regex", `allowed_images = ["freebsd-.*", "freebsd-(14"]`, R + "allowed_images[1]: \"freebsd-(14\" is not a valid regular expression (error parsing regexp: missing closing ): `freebsd-(14`); " + reErr, false},
		{"allowed_images empty pattern", `allowed_images = [""]`, R + `allowed_images[0]: is an empty string; ` + reErr, false},
		{"allowed_images number", `allowed_images = [14]`, R + `allowed_images[0]: 14 is an integer, not a string; ` + reErr, false},
		{"vm_command empty", `vm_command = []`, R + `vm_command: is empty; expected an argv array such as ["/usr/local/sbin/vm"]`, false},
		{"vm_command string", `vm_command = "/usr/local/sbin/vm"`, R + `vm_command: "/usr/local/sbin/vm" is a string, not an array of strings; expected an argv array such as ["/usr/local/sbin/vm"]`, false},
		{"vm_command element", `vm_command = ["vm", 1]`, R + `vm_command[1]: 1 is an integer, not a string; expected an argv array such as ["/usr/local/sbin/vm"]`, false},
		{"sysrc_command empty element", `sysrc_command = [""]`, R + `sysrc_command[0]: is an empty string; expected an argv array such as ["/usr/sbin/sysrc"]`, false},
		{"privilege string", `privilege = "sudo"`, R + `privilege: "sudo" is a string, not an array of strings; expected an argv prefix such as ["/usr/local/bin/sudo", "-n"], ["/usr/local/bin/doas", "-n"] or [] when running as root`, false},
		{"privilege newline", `privilege = ["sudo\n"]`, R + `privilege[0]: "sudo\n" contains a control character; expected an argv prefix such as ["/usr/local/bin/sudo", "-n"], ["/usr/local/bin/doas", "-n"] or [] when running as root`, false},
		{"vm_dir relative", `vm_dir = "vm"`, R + `vm_dir: "vm" is not valid; expected an absolute path, the mountpoint of vm-bhyve's vm_dir dataset such as "/vm"`, false},
		{"lease_file relative", `lease_file = "kea-leases4.csv"`, R + `lease_file: "kea-leases4.csv" is not valid; expected an absolute path such as "/var/db/kea/kea-leases4.csv"`, false},
		{"name_prefix uppercase", `name_prefix = "CI-"`, R + `name_prefix: "CI-" is not valid; ` + prefixErr, false},
		{"name_prefix empty", `name_prefix = ""`, R + `name_prefix: "" is not valid; ` + prefixErr, false},
		{"name_prefix dot", `name_prefix = "ci."`, R + `name_prefix: "ci." is not valid; ` + prefixErr, false},
		{"name_prefix leading dash", `name_prefix = "-ci"`, R + `name_prefix: "-ci" is not valid; ` + prefixErr, false},
		{"name_prefix too long", `name_prefix = "` + strings.Repeat("a", 33) + `"`, R + `name_prefix: "` + strings.Repeat("a", 33) + `" is not valid; ` + prefixErr, false},
		{"host_id space", `host_id = "my host"`, R + `host_id: "my host" is not valid; expected letters, digits, '.', '_' and '-', starting with a letter or digit, at most 253 characters`, false},
		{"boot_timeout words", `boot_timeout = "3 minutes"`, R + `boot_timeout: "3 minutes" is not a duration; ` + durErr, false},
		{"boot_timeout bare number", `boot_timeout = 180`, R + `boot_timeout: 180 is an integer, not a string; ` + durErr, false},
		{"boot_timeout zero", `boot_timeout = "0s"`, R + `boot_timeout: "0s" is not positive; ` + durErr, false},
		{"boot_timeout in defaults", `boot_timeout = "-1m"`, `FILE: defaults.boot_timeout: "-1m" is not positive; ` + durErr, true},
		{"ssh_connect_timeout", `ssh_connect_timeout = "ten seconds"`, R + `ssh_connect_timeout: "ten seconds" is not a duration; ` + durErr, false},
		{"stop_timeout", `stop_timeout = 30.5`, R + `stop_timeout: 30.5 is a float, not a string; ` + durErr, false},
		{"kill_grace", `kill_grace = ""`, R + `kill_grace: "" is not a duration; ` + durErr, false},
		{"builds_dir relative", `builds_dir = "builds"`, R + `builds_dir: "builds" is not valid; expected an absolute guest path other than "/", such as "/builds"`, false},
		{"builds_dir root", `builds_dir = "/"`, R + `builds_dir: "/" is not valid; expected an absolute guest path other than "/", such as "/builds"`, false},
		{"builds_dir unclean", `builds_dir = "/a/../builds"`, R + `builds_dir: "/a/../builds" is not valid; expected an absolute guest path other than "/", such as "/builds"`, false},
		{"cache_dir relative", `cache_dir = "cache"`, R + `cache_dir: "cache" is not valid; expected an absolute guest path other than "/", such as "/cache"`, false},
		{"shell zsh", `shell = "zsh"`, R + `shell: "zsh" is not valid; expected "bash" or "sh"`, false},
		{"shell with flags", `shell = "bash -l"`, R + `shell: "bash -l" is not valid; expected "bash" or "sh"`, false},
		{"host_keys unknown mode", `host_keys = "pervm"`, R + `host_keys: "pervm" is not valid; expected "auto", "per-vm" or "template"`, false},
		{"ssh.user space", `ssh.user = "git lab"`, R + `ssh.user: "git lab" is not valid; expected a user name of letters, digits, '_', '.' and '-', at most 32 characters`, false},
		{"ssh.user empty", `ssh.user = ""`, R + `ssh.user: "" is not valid; expected a user name of letters, digits, '_', '.' and '-', at most 32 characters`, false},
		{"ssh.port zero", `ssh.port = 0`, R + `ssh.port: 0 is out of range; expected an integer from 1 to 65535`, false},
		{"ssh.port too big", `ssh.port = 70000`, R + `ssh.port: 70000 is out of range; expected an integer from 1 to 65535`, false},
		{"ssh.port string", `ssh.port = "22"`, R + `ssh.port: "22" is a string, not an integer; expected an integer from 1 to 65535`, false},
		{"ssh.keepalive_interval", `ssh.keepalive_interval = "0s"`, R + `ssh.keepalive_interval: "0s" is not positive; ` + durErr, false},
		{"ssh.insecure flag string", `ssh.insecure_skip_host_key_check = "yes"`, R + `ssh.insecure_skip_host_key_check: "yes" is a string, not a boolean; expected true or false`, false},
		{"ssh.host_key garbage", `ssh.host_key = "not a key"`, R + `ssh.host_key: pinned host key "not a key" is not a public key; expected one public key line such as "ssh-ed25519 AAAA...", the contents of the template's /etc/ssh/ssh_host_ed25519_key.pub`, false},
		{"ssh.identity_file number", `ssh.identity_file = 1`, R + `ssh.identity_file: 1 is an integer, not a string; expected a file path`, false},
		{"max_cpus zero", `max_cpus = 0`, R + `max_cpus: 0 is out of range; expected an integer of 1 or more, the most vCPUs a job may ask for with BHYVE_CPUS (unset: the template's cpu)`, false},
		{"max_cpus string", `max_cpus = "4"`, R + `max_cpus: "4" is a string, not an integer; expected an integer of 1 or more, the most vCPUs a job may ask for with BHYVE_CPUS (unset: the template's cpu)`, false},
		{"max_memory bare number", `max_memory = "8192"`, R + `max_memory: "8192" is not a memory size; expected ` + hostmem.SizeExpect + `: the most memory a job may ask for with BHYVE_MEMORY (unset: the template's memory)`, false},
		{"max_memory zero", `max_memory = "0"`, R + `max_memory: "0" is not a memory size; expected ` + hostmem.SizeExpect + `: the most memory a job may ask for with BHYVE_MEMORY (unset: the template's memory)`, false},
		{"max_memory integer", `max_memory = 8`, R + `max_memory: 8 is an integer, not a string; expected ` + hostmem.SizeExpect + `: the most memory a job may ask for with BHYVE_MEMORY (unset: the template's memory)`, false},
		{"memory_reserve GB", `memory_reserve = "1GB"`, `FILE: defaults.memory_reserve: "1GB" is not a memory size; expected ` + hostmem.SizeExpect + `: the host memory that must stay free when a job VM starts, or "0"`, true},
		{"sysctl_command string", `sysctl_command = "/sbin/sysctl"`, R + `sysctl_command: "/sbin/sysctl" is a string, not an array of strings; expected an argv array such as ["/sbin/sysctl"], or [] to read the kernel's variables directly`, false},
		{"pool.idle_count negative", `pool.idle_count = -1`, R + `pool.idle_count: -1 is out of range; expected an integer of 0 or more`, false},
		{"pool.idle_count string", `pool.idle_count = "2"`, R + `pool.idle_count: "2" is a string, not an integer; expected an integer of 0 or more`, false},
		{"pool.idle_time", `pool.idle_time = "forever"`, R + `pool.idle_time: "forever" is not a duration; ` + durErr, false},
		{"pool.max_use_count zero", `pool.max_use_count = 0`, R + `pool.max_use_count: 0 is out of range; expected an integer of 1 or more (1: every job gets a fresh VM)`, false},
		{"pool.max_concurrent_boots zero", `pool.max_concurrent_boots = 0`, R + `pool.max_concurrent_boots: 0 is out of range; expected an integer of 1 or more`, false},
		{"ssh not a table", `ssh = "root"`, R + `ssh: is a string value; expected a table [runners."ci-1".ssh]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			file := f.minimalHostKey() + tc.line + "\n"
			if tc.inDefaults {
				file = strings.Replace(f.minimalHostKey(), "[defaults.ssh]", tc.line+"\n[defaults.ssh]", 1)
			}
			_, err := Load(f.settings(t, file), "ci-1")
			requireConfigError(t, err, f.expand(tc.want))
		})
	}
}

func TestSeveralProblemsAreReportedTogether(t *testing.T) {
	f := newFixture(t)
	_, err := Load(f.settings(t, f.minimalHostKey()+"boot_timeout = \"3 minutes\"\nshell = \"zsh\"\n"), "ci-1")
	requireConfigError(t, err, f.expand(strings.Join([]string{
		`FILE: runners."ci-1".boot_timeout: "3 minutes" is not a duration; expected a duration such as "90s", "3m" or "1h30m"`,
		`FILE: runners."ci-1".shell: "zsh" is not valid; expected "bash" or "sh"`,
	}, "\n")))
}

func TestMissingTemplate(t *testing.T) {
	f := newFixture(t)
	file := strings.Replace(minimal, `template = "freebsd-14"`, "", 1)
	_, err := Load(f.settings(t, file), "ci-1")
	requireConfigError(t, err, f.expand(`FILE: runners."ci-1".template: not set here or in [defaults]; expected the vm-bhyve template VM that jobs without image: run in, e.g. template = "freebsd-14"`))
}

func TestUnknownKeys(t *testing.T) {
	cases := []struct{ name, file, want string }{
		{"typo suggests the key", minimal + "boot_timout = \"3m\"\n",
			`FILE: runners."ci-1".boot_timout: unknown key; did you mean "boot_timeout"?`},
		{"transposed letters", minimal + "snpashot = \"base\"\n",
			`FILE: runners."ci-1".snpashot: unknown key; did you mean "snapshot"?`},
		{"case matters", minimal + "Shell = \"sh\"\n",
			`FILE: runners."ci-1".Shell: unknown key; keys are case-sensitive; did you mean "shell"?`},
		{"upstream name", minimal + "base_name = \"freebsd-14\"\n",
			`FILE: runners."ci-1".base_name: unknown key; did you mean "template"?`},
		{"upstream ssh name", minimal + "ssh.disable_strict_host_key_checking = true\n",
			`FILE: runners."ci-1".ssh.disable_strict_host_key_checking: unknown key; did you mean "insecure_skip_host_key_check"?`},
		{"ssh host has no meaning", minimal + "ssh.host = \"10.0.0.2\"\n",
			`FILE: runners."ci-1".ssh.host: unknown key; the VM's address comes from the DHCP lease, so there is no host to set`},
		{"key in the wrong table", minimal + "user = \"root\"\n",
			`FILE: runners."ci-1".user: unknown key; did you mean ssh.user (in the ssh sub-table)?`},
		{"key in the wrong sub-table", minimal + "ssh.boot_timeout = \"1m\"\n",
			`FILE: runners."ci-1".ssh.boot_timeout: unknown key; did you mean "boot_timeout" outside the ssh sub-table?`},
		{"unknown sub-table reported once", minimal + "[runners.\"ci-1\".zfs]\npool = \"zroot\"\nsnap = \"x\"\n",
			`FILE: runners."ci-1".zfs: unknown key; expected one of: template, snapshot, allowed_images, vm_command, sysrc_command, zfs_command, sysctl_command, install_command, rm_command, host_keys, privilege, isolation, arp_command, ifconfig_command, vm_dir, lease_file, name_prefix, host_id, boot_timeout, ssh_connect_timeout, stop_timeout, kill_grace, builds_dir, cache_dir, shell, max_cpus, max_memory, memory_reserve, ssh, pool`},
		{"top-level typo", "[default]\ntemplate = \"x\"\n" + minimal,
			`FILE: default: unknown key; did you mean "defaults"?`},
		{"top-level setting", "template = \"freebsd-14\"\n" + minimal,
			`FILE: template: unknown key; did you mean to set template inside [defaults] or a [runners."NAME"] section?`},
		{"several in document order", minimal + "boot_timout = \"3m\"\n[runners.\"ci-1\".pool]\nidel_time = \"1m\"\n",
			"FILE: runners.\"ci-1\".boot_timout: unknown key; did you mean \"boot_timeout\"?\n" +
				"FILE: runners.\"ci-1\".pool.idel_time: unknown key; did you mean \"idle_time\"?"},
		{"in defaults", strings.Replace(minimal, "[defaults.ssh]", "kil_grace = \"1s\"\n[defaults.ssh]", 1),
			`FILE: defaults.kil_grace: unknown key; did you mean "kill_grace"?`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := Load(f.settings(t, tc.file), "ci-1")
			requireConfigError(t, err, f.expand(tc.want))
		})
	}

	t.Run("another runner's typo does not fail this runner", func(t *testing.T) {
		f := newFixture(t)
		path := f.settings(t, minimal+"[runners.\"ci-2\"]\nboot_timout = 3\n")
		_, err := Load(path, "ci-1")
		require.NoError(t, err)
		_, err = Load(path, "ci-2")
		requireConfigError(t, err, f.expand(`FILE: runners."ci-2".boot_timout: unknown key; did you mean "boot_timeout"?`))
	})
}

func TestFileProblems(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(filepath.Join(f.dir, "bhyve.toml"), "ci-1")
		requireConfigError(t, err, f.expand(`FILE: cannot read the settings file: open FILE: no such file or directory; expected bhyve.toml next to gitlab-runner's config.toml (see REFERENCE.md)`))
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("syntax error names the line", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, "[defaults]\ntemplate = \n"), "ci-1")
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), f.expand("FILE: line 2: ")), err.Error())
		assert.True(t, strings.HasSuffix(err.Error(), "; expected valid TOML"), err.Error())
		requireConfigError(t, err, err.Error())
	})
	t.Run("writable by everyone", func(t *testing.T) {
		f := newFixture(t)
		path := f.write(t, "bhyve.toml", minimal, 0o666)
		_, err := Load(path, "ci-1")
		requireConfigError(t, err, f.expand(`FILE: is writable by every user (mode 0666); expected chmod 644 or stricter, since it chooses the commands run with privilege`))
	})
	t.Run("defaults is not a table", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, "defaults = 1\n[runners.\"ci-1\"]\n"), "ci-1")
		requireConfigError(t, err, f.expand(`FILE: defaults: is an integer value; expected a table [defaults]`))
	})
}

func TestDefaultPath(t *testing.T) {
	assert.Equal(t, "/usr/local/etc/gitlab-runner/bhyve.toml", DefaultPath("/usr/local/etc/gitlab-runner"))
	if os.Getuid() == 0 {
		assert.Equal(t, "/etc/gitlab-runner/bhyve.toml", DefaultPath(""))
		return
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	assert.Equal(t, filepath.Join(home, ".gitlab-runner", "bhyve.toml"), DefaultPath(""))
}

func TestArgvResultsDoNotAlias(t *testing.T) {
	s := &Settings{Privilege: []string{"sudo", "-n"}, VMCommand: []string{"vm"}, SysrcCommand: []string{"sysrc"}}
	a := s.VMArgv("start", "ci-1")
	a[0] = "changed"
	_ = append(s.VMArgv("list")[:3], "x")
	assert.Equal(t, []string{"sudo", "-n"}, s.Privilege)
	assert.Equal(t, []string{"sudo", "-n", "vm", "list"}, s.VMArgv("list"))
	assert.Equal(t, []string{"sysrc", "-f", "c"}, (&Settings{SysrcCommand: []string{"sysrc"}}).SysrcArgv("-f", "c"))
}

// TestMemoryReserveZero: "0" turns the reserve off (a VM must still fit in
// the free memory), the one size written without a unit.
func TestMemoryReserveZero(t *testing.T) {
	f := newFixture(t)
	s, err := Load(f.settings(t, f.minimalHostKey()+"memory_reserve = \"0\"\n"), "ci-1")
	require.NoError(t, err)
	assert.Zero(t, s.MemoryReserve)
}
