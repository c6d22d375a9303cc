// Package settings reads bhyve.toml, the sidecar settings file shared by the
// native bhyve executor and the bhyve-executor Custom-executor driver.
//
// The settings cannot live in config.toml: gitlab-runner rewrites that file on
// register, unregister, reset-token and token rotation and drops every table
// it does not know, so a [runners.bhyve] table would silently vanish. bhyve.toml
// sits next to config.toml, is never written by the runner, and is keyed by
// the runner's name (tokens rotate, names do not):
//
//	[defaults]            # applies to every runner
//	template = "freebsd-14"
//	[defaults.ssh]
//	identity_file = "id_ed25519"
//	known_hosts_file = "known_hosts"
//
//	[runners."ci-1"]      # the runner's name = "ci-1" in config.toml
//	boot_timeout = "5m"   # overrides [defaults] key by key
//
// Both front-ends call Load at every job, so edits apply to the next job
// without a restart. Load only reads files; every problem it finds is a
// *failure.ConfigError naming the file, the key and what was expected.
// REFERENCE.md documents every key; testdata/bhyve.example.toml is a complete
// commented example.
//
// A *Settings is immutable after Load and safe for concurrent use.
package settings

import (
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
)

// FileName is the settings file's name inside gitlab-runner's config directory.
const FileName = "bhyve.toml"

// Settings are the effective settings of one runner: built-in defaults,
// overlaid by [defaults], overlaid by [runners."NAME"]. Field comments give the
// TOML key and its built-in default.
//
// Treat a loaded Settings as read-only: the methods use what Load parsed
// (compiled patterns, keys), not later edits of the fields. Settings built in
// code without Load work too; the methods then parse the fields on each call.
type Settings struct {
	// RunnerName is the selected [runners."NAME"] section.
	RunnerName string
	// Path is the settings file as passed to Load; messages name it.
	Path string

	// Template (template, required) is the vm-bhyve VM cloned for jobs that
	// name no image:, or name it explicitly.
	Template string
	// Snapshot (snapshot, "base") is the ZFS snapshot of every template that
	// is cloned: vm clone TEMPLATE@SNAPSHOT NAME.
	Snapshot string
	// AllowedImages (allowed_images, []) are regular expressions a job's
	// image: must match in full to select another template. Empty: image:
	// is ignored with a warning and jobs use Template, as upstream does.
	AllowedImages []string

	// VMCommand (vm_command, ["/usr/local/sbin/vm"]) is vm-bhyve's CLI.
	VMCommand []string
	// SysrcCommand (sysrc_command, ["/usr/sbin/sysrc"]) edits a clone's
	// NAME.conf before it starts.
	SysrcCommand []string
	// SysctlCommand (sysctl_command, []) prints numeric sysctl variables
	// with -n; [] reads them from the kernel (FreeBSD). Run without
	// Privilege: the variables read need none.
	SysctlCommand []string
	// ZFSCommand (zfs_command, ["/sbin/zfs"]) only removes partial clones:
	// datasets a `vm clone` cut short left without a conf, which `vm`
	// cannot see.
	ZFSCommand []string
	// InstallCommand (install_command, ["/usr/bin/install"]) and RmCommand
	// (rm_command, ["/bin/rm"]) put a clone's own cloud-init data into its
	// root-owned directory before it starts (per-VM host keys): one
	// `install -m 0600 FILES... DIR/.cloud-init/` and one `rm -f
	// DIR/seed.iso`.
	InstallCommand []string
	RmCommand      []string
	// HostKeys (host_keys, "auto") says which host key a job's connection
	// trusts; see HostKeysAuto and its siblings.
	HostKeys string
	// Privilege (privilege, ["/usr/local/bin/sudo", "-n"]) prefixes
	// VMCommand, SysrcCommand, ZFSCommand, ArpCommand, IfconfigCommand,
	// InstallCommand and RmCommand. [] when the runner itself runs as root.
	Privilege []string
	// Isolation (isolation, true) binds each job VM's address and MAC to
	// its tap on the host and requires a private switch. false is unsafe:
	// a job with root in its VM can then take a neighbour job's address or
	// MAC and receive that job's scripts and secrets.
	Isolation bool
	// ArpCommand (arp_command, ["/usr/sbin/arp"]) sets and removes the
	// permanent ARP entry of each job VM (behind Privilege).
	ArpCommand []string
	// IfconfigCommand (ifconfig_command, ["/sbin/ifconfig"]) pins each job
	// VM's MAC to its tap on the switch bridge (behind Privilege).
	IfconfigCommand []string
	// VMDir (vm_dir, "/vm") is the mountpoint of vm-bhyve's vm_dir dataset.
	VMDir string
	// LeaseFile (lease_file, "/var/db/kea/kea-leases4.csv") is Kea's memfile.
	LeaseFile string
	// NamePrefix (name_prefix, "ci-") starts the name of every VM the
	// executor creates; the executor never touches a VM without it.
	NamePrefix string
	// HostID (host_id, the host name) identifies this host in the ownership
	// marker written into every job VM.
	HostID string

	// BootTimeout (boot_timeout, "3m") bounds clone to SSH ready.
	BootTimeout time.Duration
	// SSHConnectTimeout (ssh_connect_timeout, "10s") bounds one connection
	// attempt, TCP connect plus SSH handshake.
	SSHConnectTimeout time.Duration
	// StopTimeout (stop_timeout, "30s") is how long a template's ACPI
	// shutdown may take before its snapshot (template build and rotate).
	// Job VMs are powered off at once.
	StopTimeout time.Duration
	// KillGrace (kill_grace, "10s") is the wait between SIGTERM and SIGKILL to
	// the job's processes when a job is cancelled.
	KillGrace time.Duration

	// BuildsDir (builds_dir, "/builds") is the absolute guest directory for
	// checkouts.
	BuildsDir string
	// CacheDir (cache_dir, "/cache") is the absolute guest directory for the
	// local cache.
	CacheDir string
	// Shell (shell, "bash") is "bash" or "sh"; see ShellCommand.
	Shell string

	// MaxCPUs (max_cpus, the template's cpu) is the most vCPUs a job may
	// ask for with BHYVE_CPUS; 0 when unset.
	MaxCPUs int
	// MaxMemory (max_memory, the template's memory) is the most memory a
	// job may ask for with BHYVE_MEMORY; 0 when unset.
	MaxMemory hostmem.Size
	// MemoryReserve (memory_reserve, "1G") is the host memory that must
	// stay free after a job VM's memory is taken; a VM that would eat into
	// it is not started.
	MemoryReserve hostmem.Size

	SSH  SSH
	Pool Pool

	d *derived // parsed forms; a pointer so fmt prints an address, not keys
}

// SSH is the [ssh] sub-table. Names follow upstream's [runners.ssh].
type SSH struct {
	// User (ssh.user, "gitlab-runner") is the guest account jobs run as.
	User string
	// Port (ssh.port, 22) is the guest's sshd port.
	Port int
	// IdentityFile (ssh.identity_file) is a private key without passphrase.
	// Required unless a password is set. Relative paths are resolved against
	// the settings file's directory.
	IdentityFile string
	// KnownHostsFile (ssh.known_hosts_file) pins host keys per template: its
	// host patterns are matched against the template name, not an address.
	KnownHostsFile string
	// HostKey (ssh.host_key) pins one public key ("ssh-ed25519 AAAA...") for
	// every template.
	HostKey string
	// Password (ssh.password or the contents of ssh.password_file) is offered
	// after the key. Never printed.
	Password Secret
	// PasswordFile (ssh.password_file) is where Password was read from, if so.
	PasswordFile string
	// KeepAliveInterval (ssh.keepalive_interval, "15s") paces keepalive
	// requests that detect a dead VM during long silent job steps.
	KeepAliveInterval time.Duration
	// InsecureSkipHostKeyCheck (ssh.insecure_skip_host_key_check, false)
	// accepts any host key. Must be set explicitly; see REFERENCE.md.
	InsecureSkipHostKeyCheck bool
}

// Pool is the [pool] sub-table for warm pools of pre-booted VMs.
type Pool struct {
	// IdleCount (pool.idle_count, 0) VMs are kept booted and waiting.
	IdleCount int
	// IdleTime (pool.idle_time, "30m") after which an idle VM is destroyed.
	IdleTime time.Duration
	// MaxUseCount (pool.max_use_count, 1) jobs may run in one VM. Above 1 a
	// job sees what earlier jobs left behind.
	MaxUseCount int
	// MaxConcurrentBoots (pool.max_concurrent_boots, 2) bounds simultaneous
	// clone-and-boot operations on this host.
	MaxConcurrentBoots int
}

// The host_keys modes.
const (
	// HostKeysPerVM: every clone gets a fresh host key through its own
	// cloud-init data, and the job trusts that key alone. A template that
	// cannot take it is a configuration error.
	HostKeysPerVM = "per-vm"
	// HostKeysTemplate: every clone presents the template's host key,
	// pinned per template name. Any job VM can read that key.
	HostKeysTemplate = "template"
	// HostKeysAuto: per-vm when the clone can take cloud-init data (it has
	// .cloud-init/ and a seed disk, and vm-bhyve rebuilds the seed at
	// start), else template.
	HostKeysAuto = "auto"
)

func validHostKeysMode(v string) bool {
	return v == HostKeysAuto || v == HostKeysPerVM || v == HostKeysTemplate
}

// DefaultPath is where the settings live for a gitlab-runner whose config.toml
// is in configDir. An empty configDir (run-single has none) falls back to the
// directory gitlab-runner itself defaults to: /etc/gitlab-runner for root,
// ~/.gitlab-runner otherwise, the current directory as a last resort.
func DefaultPath(configDir string) string {
	if configDir == "" {
		configDir = defaultConfigDir()
	}
	return filepath.Join(configDir, FileName)
}

func defaultConfigDir() string {
	if os.Getuid() == 0 {
		return "/etc/gitlab-runner"
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".gitlab-runner")
	}
	if wd, err := os.Getwd(); err == nil {
		return wd
	}
	return "."
}

// ShellCommand is the command line that reads a job script on stdin in the
// guest: a login shell, so that the profile puts /usr/local/bin (bash,
// git, gitlab-runner) on PATH, as upstream's SSH and VirtualBox executors do.
func (s *Settings) ShellCommand() string {
	return s.Shell + " -l"
}

// VMArgv is the argv of one vm-bhyve invocation: privilege, vm_command, args.
// The result is a fresh slice; callers may append to it.
func (s *Settings) VMArgv(args ...string) []string {
	return joinArgv(s.Privilege, s.VMCommand, args)
}

// SysrcArgv is the argv of one sysrc invocation: privilege, sysrc_command,
// args.
func (s *Settings) SysrcArgv(args ...string) []string {
	return joinArgv(s.Privilege, s.SysrcCommand, args)
}

// ArpArgv is the argv of one arp(8) invocation: privilege, arp_command, args.
func (s *Settings) ArpArgv(args ...string) []string {
	return joinArgv(s.Privilege, s.ArpCommand, args)
}

// IfconfigArgv is the argv of one ifconfig(8) invocation.
func (s *Settings) IfconfigArgv(args ...string) []string {
	return joinArgv(s.Privilege, s.IfconfigCommand, args)
}

func joinArgv(parts ...[]string) []string {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]string, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Where names a resource key (max_cpus, max_memory, memory_reserve) as an
// operator finds it, "FILE: SECTION.KEY", for messages that name a cap.
func (s *Settings) Where(key string) string {
	if s.d != nil && s.d.where[key] != "" {
		return s.Path + ": " + s.d.where[key]
	}
	return s.Path + ": runners." + strconv.Quote(s.RunnerName) + "." + key
}
