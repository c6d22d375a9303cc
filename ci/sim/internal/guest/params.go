// Package guest plays the bhyve side of a simulated FreeBSD host: the
// "bhyve: NAME" process, the bhyveload stage and the guest itself. A guest is
// a set of Linux namespaces (net, mount, uts, pid, ipc) whose init is this
// package: it gets the NIC that _run created, takes its address from the real
// Kea server with udhcpc and runs a real sshd with the host keys found in the
// VM's (template-inherited) files.
package guest

import (
	"encoding/json"
	"fmt"
	"os"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// Roles of the multi-call binary selected through simstate.RoleEnv.
const (
	RoleBhyve     = "bhyve"
	RoleBhyveload = "bhyveload"
	RoleInit      = "guest-init"
)

// NIC is one guest network interface as _run provisioned it.
type NIC struct {
	Num  int    `json:"num"`
	Tap  string `json:"tap"`
	Peer string `json:"peer"`
	MAC  string `json:"mac"`
}

// BhyveParams tell the bhyve process which guest to run. They travel in the
// environment because its argv must be exactly "bhyve: NAME".
type BhyveParams struct {
	Root    string   `json:"root"`
	Name    string   `json:"name"`
	DiskDir string   `json:"disk_dir"`
	NICs    []NIC    `json:"nics"`
	Lineage []string `json:"lineage"`
}

// LoaderParams tell the bhyveload stand-in how long to take.
type LoaderParams struct {
	Root  string            `json:"root"`
	Name  string            `json:"name"`
	Delay simstate.Duration `json:"delay"`
	Fail  bool              `json:"fail"`
}

// InitParams configure the guest init.
type InitParams struct {
	Name          string            `json:"name"`
	DiskDir       string            `json:"disk_dir"`
	GuestDir      string            `json:"guest_dir"`
	NICs          []NIC             `json:"nics"`
	SSHUser       string            `json:"ssh_user"`
	Tools         simstate.Tools    `json:"tools"`
	BootDelay     simstate.Duration `json:"boot_delay"`
	SSHDelay      simstate.Duration `json:"ssh_delay"`
	ShutdownDelay simstate.Duration `json:"shutdown_delay"`
	NoDHCP        bool              `json:"no_dhcp"`
	NoSSHD        bool              `json:"no_sshd"`
	// RecordDir, when set, is a host directory bind-mounted into the guest
	// where sshd's ForceCommand wrapper appends every session's command
	// and stdin (the RecordSessions knob).
	RecordDir string `json:"record_dir,omitempty"`
}

// Env encodes role parameters for a child's environment.
func Env(role string, params any) ([]string, error) {
	b, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("encode %s parameters: %w", role, err)
	}
	return []string{simstate.RoleEnv + "=" + role, simstate.ParamsEnv + "=" + string(b)}, nil
}

func decode(into any) error {
	if err := json.Unmarshal([]byte(os.Getenv(simstate.ParamsEnv)), into); err != nil {
		return fmt.Errorf("decode role parameters: %w", err)
	}
	return nil
}

// childEnv is the environment of a child role: ours minus the role
// variables, plus the new ones.
func childEnv(extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		if hasPrefix(e, simstate.RoleEnv+"=") || hasPrefix(e, simstate.ParamsEnv+"=") {
			continue
		}
		env = append(env, e)
	}
	return append(env, extra...)
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// Defaults when no knob is set: fast enough for tests, but every stage of a
// real boot is still observable.
const (
	DefaultLoaderDelay   = simstate.Duration(150_000_000)
	DefaultShutdownDelay = simstate.Duration(1_500_000_000)
)
