// Package simstate holds the on-disk description of one simulated FreeBSD
// host. Every process of the simulator (the fake vm and sysrc, the _run
// supervisors, the guests, the CLI) finds its way around through the
// sim.json file under the host's root, so that a wrapper exec'd through sudo
// or with a cleared environment needs nothing but --root.
package simstate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// DefaultRoot is where `bhyve-sim up` puts a host unless told otherwise.
const DefaultRoot = "/var/tmp/bhyve-sim"

// MarkerEnv is set on every process the simulator starts. Teardown and leak
// checks find processes by it, so a crashed test can still be cleaned up.
const MarkerEnv = "BHYVE_SIM_ID"

// RoleEnv selects an internal role of the multi-call binary. It is used for
// processes whose argv must look like the real thing ("bhyve: NAME",
// "bhyveload ... NAME") and therefore cannot carry a subcommand.
const RoleEnv = "BHYVE_SIM_ROLE"

// ParamsEnv carries a role's JSON parameters.
const ParamsEnv = "BHYVE_SIM_PARAMS"

// Version modes of the fake vm command.
const (
	Version16 = "1.6"
	Version17 = "1.7"
	Version18 = "1.8"
)

// Tools are absolute paths of the host programs the simulator drives. They
// are resolved once at `up` so that an environment-cleared exec still works.
type Tools struct {
	IP       string `json:"ip"`
	Bridge   string `json:"bridge"`
	Udhcpc   string `json:"udhcpc"`
	Sshd     string `json:"sshd"`
	KeaDHCP4 string `json:"kea_dhcp4"`
	KeaLFC   string `json:"kea_lfc"`
	Nsenter  string `json:"nsenter"`
	Useradd  string `json:"useradd"`
}

// Config is the persisted state of one simulated host (ROOT/sim.json).
type Config struct {
	ID            string   `json:"id"`
	Root          string   `json:"root"`
	VMDir         string   `json:"vm_dir"`
	Dataset       string   `json:"dataset"`
	LeaseFile     string   `json:"lease_file"`
	BinDir        string   `json:"bin_dir"`
	HostName      string   `json:"host_name"`
	Subnet        string   `json:"subnet"`
	HostAddr      string   `json:"host_addr"`
	LFCInterval   int      `json:"lfc_interval"`
	ValidLifetime int      `json:"valid_lifetime"`
	VersionMode   string   `json:"version_mode"`
	Template      string   `json:"template"`
	Snapshot      string   `json:"snapshot"`
	SSHUser       string   `json:"ssh_user"`
	NetNS         string   `json:"netns"`
	Bridge        string   `json:"bridge"`
	Switch        string   `json:"switch"`
	Binary        string   `json:"binary"`
	KeaConfig     string   `json:"kea_config"`
	KeaSocket     string   `json:"kea_socket"`
	Tools         Tools    `json:"tools"`
	Created       []string `json:"created"`
	Templates     []string `json:"templates"`
}

// IDForRoot derives the host's short id from its root directory. Deriving it
// (instead of drawing it at random) lets `down` find the namespace of a host
// whose sim.json was lost in a crash.
func IDForRoot(root string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(root)))
	return hex.EncodeToString(sum[:])[:6]
}

// NetNSName is the host namespace name for an id.
func NetNSName(id string) string { return "bsim-" + id }

// BridgeName is the switch bridge for an id (max 15 chars for Linux links).
func BridgeName(id string) string { return "vm-pub-" + id }

// TapName is the host side of guest NIC n (FreeBSD's tapN).
func TapName(id string, n int) string { return fmt.Sprintf("tap%d-%s", n, id) }

// PeerName is the temporary name of the guest side of tap n before it is
// moved into the guest and renamed to vtnet0.
func PeerName(id string, n int) string { return fmt.Sprintf("vtn%d-%s", n, id) }

// StatePath is where the state file lives under root.
func StatePath(root string) string { return filepath.Join(root, "sim.json") }

// Load reads ROOT/sim.json.
func Load(root string) (*Config, error) {
	b, err := os.ReadFile(StatePath(root))
	if err != nil {
		return nil, fmt.Errorf("read simulator state: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse %s: %w", StatePath(root), err)
	}
	return &c, nil
}

// Save writes the state atomically so a concurrent reader never sees half a
// file.
func (c *Config) Save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode simulator state: %w", err)
	}
	return WriteFileAtomic(StatePath(c.Root), append(b, '\n'), 0o644)
}

// WriteFileAtomic writes via a temporary file and rename, like sysrc does.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), perm); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SubnetPrefix parses the configured subnet.
func (c *Config) SubnetPrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(c.Subnet)
	return p
}

// Marker is the environment entry identifying this host's processes.
func (c *Config) Marker() string { return MarkerEnv + "=" + c.ID }

// Paths below the root. They are methods so every process agrees on them.

func (c *Config) RunDir() string          { return filepath.Join(c.Root, "run") }
func (c *Config) LogDir() string          { return filepath.Join(c.Root, "log") }
func (c *Config) FaultDir() string        { return filepath.Join(c.Root, "faults") }
func (c *Config) ZFSDir() string          { return filepath.Join(c.Root, "zfs") }
func (c *Config) VMMDir() string          { return filepath.Join(c.Root, "dev", "vmm") }
func (c *Config) GuestsDir() string       { return filepath.Join(c.Root, "guests") }
func (c *Config) SSHDir() string          { return filepath.Join(c.Root, "ssh") }
func (c *Config) RCConf() string          { return filepath.Join(c.Root, "etc", "rc.conf") }
func (c *Config) KnownHosts() string      { return filepath.Join(c.SSHDir(), "known_hosts") }
func (c *Config) SSHKey() string          { return filepath.Join(c.SSHDir(), "id_ed25519") }
func (c *Config) VMCommand() string       { return filepath.Join(c.BinDir, "vm") }
func (c *Config) SysrcCommand() string    { return filepath.Join(c.BinDir, "sysrc") }
func (c *Config) ZFSCommand() string      { return filepath.Join(c.BinDir, "zfs") }
func (c *Config) SysctlCommand() string   { return filepath.Join(c.BinDir, "sysctl") }
func (c *Config) ArpCommand() string      { return filepath.Join(c.BinDir, "arp") }
func (c *Config) IfconfigCommand() string { return filepath.Join(c.BinDir, "ifconfig") }

// SysctlValues is the fake sysctl's variables, outside the VM tree.
func (c *Config) SysctlValues() string { return filepath.Join(c.Root, "sysctl.json") }
func (c *Config) SystemConf() string   { return filepath.Join(c.VMDir, ".config", "system.conf") }

// UEFIFirmwareDir stands in for /usr/local/share/uefi-firmware, where the
// edk2-bhyve packages install the firmware vm::uefi looks for.
func (c *Config) UEFIFirmwareDir() string {
	return filepath.Join(c.Root, "usr", "local", "share", "uefi-firmware")
}

// InvocationLog lists every `vm` run on the host, one line of arguments each
// (internal `_run` supervisors included).
func (c *Config) InvocationLog() string { return filepath.Join(c.LogDir(), "vm-invocations.log") }

// VMMPath is the stand-in for /dev/vmm/NAME.
func (c *Config) VMMPath(name string) string { return filepath.Join(c.VMMDir(), name) }

// SessionLog is where a RecordSessions guest records its SSH sessions.
func (c *Config) SessionLog(name string) string {
	return filepath.Join(c.SessionDir(name), "sessions.log")
}

// SessionDir is the host directory a RecordSessions guest writes into.
func (c *Config) SessionDir(name string) string {
	return filepath.Join(c.LogDir(), "sessions-"+name)
}

// GuestLog is where a guest's console (bhyve's stdio) goes.
func (c *Config) GuestLog(name string) string {
	return filepath.Join(c.LogDir(), "guest-"+name+".log")
}

// VMPath is the VM's directory in the default datastore.
func (c *Config) VMPath(name string) string { return filepath.Join(c.VMDir, name) }

// ConfPath is NAME/NAME.conf.
func (c *Config) ConfPath(name string) string {
	return filepath.Join(c.VMDir, name, name+".conf")
}

// DatasetFor is the ZFS dataset of a VM in the default datastore.
func (c *Config) DatasetFor(name string) string { return c.Dataset + "/" + name }

// NameFromDataset is the inverse of DatasetFor ("" if outside the datastore).
func (c *Config) NameFromDataset(ds string) string {
	rest, ok := strings.CutPrefix(ds, c.Dataset+"/")
	if !ok || strings.Contains(rest, "/") {
		return ""
	}
	return rest
}

// VersionAtLeast17 reports whether 1.7+ behaviour applies.
func (c *Config) VersionAtLeast17() bool {
	return c.VersionMode == Version17 || c.VersionMode == Version18
}
