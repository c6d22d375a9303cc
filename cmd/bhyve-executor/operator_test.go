package main_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// operator runs bhyve-executor as an operator would on the host: inside the
// host's namespace, with the given settings file.
func operator(t *testing.T, h *fixture.Host, settingsPath string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	argv := append([]string{"netns", "exec", h.NetNS(), driver(t), "--config", settingsPath}, args...)
	cmd := exec.Command("ip", argv...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	t.Logf("bhyve-executor %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

func TestDoctorOnAHealthyHost(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	out, _, code := operator(t, h, h.SettingsPath, "doctor", "--boot")
	assert.Equal(t, 0, code)
	for _, check := range []string{"settings", "vm command", "privilege", "sysrc command", "template", "snapshot", "private switch", "arp command", "ifconfig command", "lease file", "ssh key", "host key", "test boot"} {
		assert.Contains(t, out, "[ ok ] "+check+":")
	}
	assert.Contains(t, out, "all checks passed")
	assert.NotContains(t, out, "FAIL")
	assert.Contains(t, out, `[WARN] host keys: host_keys = "auto" falls back to tmpl's shared key: template tmpl has no .cloud-init/`, "the hand-made template cannot take per-VM keys")
	assert.Contains(t, out, "fix: build the template with `bhyve-executor template build tmpl")
}

func TestDoctorRefusesPerVMHostKeysOnATemplateWithoutCloudInit(t *testing.T) {
	h := fixture.New(t, sim.Options{}, `host_keys = "per-vm"`)
	out, _, code := operator(t, h, h.SettingsPath, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, `[FAIL] host keys: host_keys = "per-vm", but template tmpl has no .cloud-init/`)
	assert.Contains(t, out, `or set host_keys = "template"`)
}

func TestDoctorIsolationPrerequisites(t *testing.T) {
	h := fixture.New(t, sim.Options{SharedSwitch: true})
	out, _, code := operator(t, h, h.SettingsPath, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "[FAIL] private switch: switch \"public\" of template tmpl is not private")
	assert.Contains(t, out, "fix: vm switch private public on")

	wrong := filepath.Join(t.TempDir(), "wrong.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, wrong, `isolation = false`, `arp_command = ["/nonexistent/arp"]`))
	out, _, code = operator(t, h, wrong, "doctor")
	assert.Equal(t, 0, code, "isolation = false is the operator's (unsafe) choice")
	assert.Contains(t, out, "[ ok ] isolation: OFF (isolation = false): UNSAFE")

	r, err := h.VM(context.Background(), "switch", "private", "public", "on")
	require.NoError(t, err)
	require.Equal(t, 0, r.ExitCode, r.Stderr)
	broken := filepath.Join(t.TempDir(), "broken.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, broken, `arp_command = ["/nonexistent/arp"]`))
	out, _, code = operator(t, h, broken, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "[ ok ] private switch: public")
	assert.Contains(t, out, "[FAIL] arp command:")
	assert.Contains(t, out, "[ ok ] ifconfig command:")
}

func TestDoctorNamesEachProblemAndItsFix(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	dir := t.TempDir()
	garbage := filepath.Join(dir, "leases.csv")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not,a kea lease file\n"), 0o644))

	broken := filepath.Join(dir, "broken.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, broken,
		`snapshot = "nosuch"`,
		`lease_file = "`+garbage+`"`,
	))
	out, _, code := operator(t, h, broken, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "[FAIL] snapshot: tmpl@nosuch not found")
	assert.Contains(t, out, "fix: with the template stopped: vm snapshot tmpl@nosuch")
	assert.Contains(t, out, "[FAIL] lease file:")
	assert.Contains(t, out, garbage)
	assert.Contains(t, out, "2 check(s) failed")
	assert.Contains(t, out, "[ ok ] template:", "checks after a failure still run")

	missing := filepath.Join(dir, "missing.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, missing, `lease_file = "/nonexistent/kea-leases4.csv"`))
	out, _, code = operator(t, h, missing, "doctor")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "[FAIL] lease file:")
	assert.Contains(t, out, "fix: point lease_file at Kea's memfile")
}

func TestDoctorBootWithAKeyTheTemplateRefuses(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	key := filepath.Join(t.TempDir(), "wrong_ed25519")
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(block), 0o600))

	wrong := filepath.Join(t.TempDir(), "wrong-key.toml")
	require.NoError(t, fixture.WriteSettings(h.Host, wrong, `ssh.identity_file = "`+key+`"`))
	out, _, code := operator(t, h, wrong, "doctor", "--boot")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "[ ok ] ssh key:", "the key itself is fine")
	assert.Contains(t, out, "[FAIL] test boot:")
	assert.Contains(t, out, "fix: the template does not accept ssh.identity_file ("+key+")")
	out, _, _ = operator(t, h, h.SettingsPath, "sweep")
	assert.Contains(t, out, "no VMs named ci-* besides the template", "the failed test boot left nothing behind")
}

func TestIPCommand(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	vm := h.VMCommand()
	for _, args := range [][]string{{"clone", "tmpl@base", "lookup"}, {"start", "lookup"}} {
		require.NoError(t, exec.Command(vm, args...).Run())
	}
	addr, err := h.GuestAddr(context.Background(), "lookup")
	require.NoError(t, err)
	mac, err := h.GuestMAC("lookup")
	require.NoError(t, err)

	out, _, code := operator(t, h, h.SettingsPath, "ip", "--mac", strings.ToUpper(mac))
	require.Equal(t, 0, code)
	lines := strings.Split(out, "\n")
	assert.Equal(t, addr.String(), lines[0], "the address alone on the first line, for scripts")
	assert.Contains(t, lines[1], "matched "+h.LeaseFile()+" line ")
	assert.Contains(t, lines[2], "hwaddr "+mac+", state default")

	_, errOut, code := operator(t, h, h.SettingsPath, "ip", "--mac", "58:9c:fc:0f:ff:ff", "--lease-file", h.LeaseFile())
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "58:9c:fc:0f:ff:ff")

	_, errOut, code = operator(t, h, h.SettingsPath, "ip", "--mac", "not-a-mac")
	assert.Equal(t, 64, code)
	assert.Contains(t, errOut, `--mac "not-a-mac" is not a MAC address`)
}

func TestSweepListsThenDestroysOnlyOrphans(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	// A job whose gitlab-runner died: prepare ran under a parent that exits
	// right after, so the VM's recorded holder is gone.
	tmp := t.TempDir()
	prep := exec.Command("ip", "netns", "exec", h.NetNS(), "sh", "-c", driver(t)+" prepare; true")
	prep.Env = append(os.Environ(), "BHYVE_EXECUTOR_CONFIG="+h.SettingsPath, "TMPDIR="+tmp,
		"CUSTOM_ENV_CI_JOB_ID=77", "CUSTOM_ENV_CI_CONCURRENT_ID=0")
	out, err := prep.CombinedOutput()
	require.NoError(t, err, "%s", out)
	// And an operator's VM that only shares the prefix.
	require.NoError(t, exec.Command(h.VMCommand(), "clone", "tmpl@base", "ci-operator").Run())

	list, _, code := operator(t, h, h.SettingsPath, "sweep")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `ci-sim-runner-77-0\s+Running \(\d+\)\s+77\s+orphan\s+would destroy`, list)
	assert.Regexp(t, `ci-operator\s+Stopped\s+0\s+not ours\s+-`, list)
	assert.Contains(t, list, "1 orphaned VM(s); run `bhyve-executor sweep --force`")

	list, _, code = operator(t, h, h.SettingsPath, "sweep", "--force")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `ci-sim-runner-77-0\s+.*orphan\s+destroyed`, list)
	vms, err := exec.Command(h.VMCommand(), "list").Output()
	require.NoError(t, err)
	assert.NotContains(t, string(vms), "ci-sim-runner-77-0")
	assert.Contains(t, string(vms), "ci-operator")
}
