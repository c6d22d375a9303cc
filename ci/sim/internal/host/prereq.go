package host

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// tool is a program the simulator drives and the Debian package that ships
// it, so a missing one can be named precisely.
type tool struct {
	name, pkg string
	set       func(*simstate.Tools, string)
}

var tools = []tool{
	{"ip", "iproute2", func(t *simstate.Tools, p string) { t.IP = p }},
	{"bridge", "iproute2", func(t *simstate.Tools, p string) { t.Bridge = p }},
	{"kea-dhcp4", "kea-dhcp4-server", func(t *simstate.Tools, p string) { t.KeaDHCP4 = p }},
	{"kea-lfc", "kea-common", func(t *simstate.Tools, p string) { t.KeaLFC = p }},
	{"sshd", "openssh-server", func(t *simstate.Tools, p string) { t.Sshd = p }},
	{"udhcpc", "udhcpc", func(t *simstate.Tools, p string) { t.Udhcpc = p }},
	{"nsenter", "util-linux", func(t *simstate.Tools, p string) { t.Nsenter = p }},
	{"useradd", "passwd", func(t *simstate.Tools, p string) { t.Useradd = p }},
}

// lookTool finds a program in the system directories first: the simulator
// is often run with a reduced PATH (sudo, env -i).
func lookTool(name string) (string, bool) {
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, true
		}
	}
	return "", false
}

// Prerequisites checks everything the simulated host needs and returns the
// resolved tool paths, or one error listing every missing piece with the
// Debian package that provides it.
func Prerequisites() (simstate.Tools, error) {
	var t simstate.Tools
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges (network namespaces, mounts and bridges need root; run the tests as root, as CI does)")
	}
	for _, tl := range tools {
		p, ok := lookTool(tl.name)
		if !ok {
			missing = append(missing, fmt.Sprintf("%s (Debian package: %s)", tl.name, tl.pkg))
			continue
		}
		tl.set(&t, p)
	}
	if b, err := os.ReadFile("/proc/filesystems"); err == nil && !strings.Contains(string(b), "overlay") {
		missing = append(missing, "overlayfs support in the kernel (modprobe overlay)")
	}
	if len(missing) > 0 {
		return t, errors.New("bhyve-sim: missing prerequisites:\n  - " + strings.Join(missing, "\n  - ") +
			"\ninstall with: apt-get install iproute2 kea-dhcp4-server openssh-server openssh-client udhcpc util-linux passwd")
	}
	return t, nil
}
