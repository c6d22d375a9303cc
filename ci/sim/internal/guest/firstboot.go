package guest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/diskimage"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/tree"
)

// A guest whose disk was written from a bhyve-sim image (diskimage) boots
// as a FreeBSD cloud image would, as far as a template build can tell:
//
//   - /etc/rc runs the firstboot rc.d scripts only while /firstboot exists
//     and deletes it at the end of boot (libexec/rc/rc);
//   - nuageinit (firstboot, before networking) reads the cidata seed and
//     gives the top-level ssh_authorized_keys to the default user
//     (libexec/nuageinit; the default user is "freebsd", here the
//     simulated host's guest user) and writes ssh_keys' host keys
//     (nuageinit(7)), before rc.d/sshd looks for them;
//   - rc.d/sshd generates every missing host key at each boot
//     (sshd_keygen_alg), so a fresh image gets its own keys once and keeps
//     them;
//   - root has an empty password, as FreeBSD's VM images ship it
//     (release/tools/vmimage.subr sets none), so `su` works for the
//     default user (pam_unix nullok on both FreeBSD and Debian);
//   - FreeBSD's own tools (pkg, pw, sysrc, service, freebsd-version) are
//     simulation stand-ins on the PATH of SSH sessions only (standinDir);
//   - at a clean shutdown the guest's writes go back to its disk, so a
//     snapshot of a provisioned template carries the provisioning.

// standinDir holds the FreeBSD command stand-ins. It is never written back
// to the disk: every boot of an image guest installs them afresh.
const standinDir = "/usr/local/bhyve-sim-standins/bin"

// usersFile lists the accounts the pw stand-in created, one per line; sshd
// admits them next to the simulated host's guest user.
const usersFile = "/var/db/bhyve-sim/users"

// hostKeyAlgs are the keys rc.d/sshd generates on the newer
// basic-cloudinit images (sshd_rsa_enable="NO").
var hostKeyAlgs = []string{"ed25519"}

// imageBoot does the FreeBSD boot steps above on the guest root m, and
// returns the host key files (relative to m) the guest's sshd must use.
// nuageinit runs before rc.d/sshd (rc.d/nuageinit: BEFORE: NETWORKING), so
// keys it writes from ssh_keys are the ones sshd then finds and keeps.
func (g *guestInit) imageBoot(m string, u user) ([]string, error) {
	fromSeed := map[string]bool{}
	if exists(filepath.Join(m, "firstboot")) {
		var err error
		if fromSeed, err = g.nuageinit(m, u); err != nil {
			g.logf("nuageinit: %v", err)
		}
	}
	var keys []string
	for _, alg := range hostKeyAlgs {
		rel := "etc/ssh/ssh_host_" + alg + "_key"
		if !fromSeed[alg] && !exists(filepath.Join(g.p.DiskDir, rel)) {
			// The overlay shows the machine's own key here; the guest's
			// replaces it.
			if err := writeHostKey(filepath.Join(m, rel), g.p.Name); err != nil {
				return nil, fmt.Errorf("rc.d/sshd: generate %s host key: %w", alg, err)
			}
			g.logf("Generating %s host key.", strings.ToUpper(alg))
		}
		keys = append(keys, rel)
	}
	if err := emptyRootPassword(filepath.Join(m, "etc/shadow")); err != nil {
		return nil, err
	}
	if err := writeStandins(filepath.Join(m, standinDir)); err != nil {
		return nil, err
	}
	// /etc/rc, at the end of boot.
	_ = os.Remove(filepath.Join(m, "firstboot"))
	return keys, nil
}

// cloudConfig is the part of a #cloud-config user-data the simulated
// nuageinit applies (libexec/nuageinit, nuageinit(7)).
type cloudConfig struct {
	AuthorizedKeys []string          `yaml:"ssh_authorized_keys"`
	SSHKeys        map[string]string `yaml:"ssh_keys"`
}

// nuageinit applies the seed (seed.iso next to the disk, listed in the
// conf as an ahci-cd disk by vm create -C): local-hostname is taken by the
// simulated host anyway; ssh_authorized_keys go to the default user;
// ssh_keys' <algo>_private and <algo>_public become
// /etc/ssh/ssh_host_<algo>_key (mode 0600) and .pub. It returns the
// algorithms whose host key it wrote. Only "#cloud-config" user-data is
// parsed, as nuageinit does ("#!" is a script to run late, anything else
// is ignored).
func (g *guestInit) nuageinit(m string, u user) (map[string]bool, error) {
	seed := filepath.Join(filepath.Dir(g.p.DiskDir), "seed.iso")
	files, err := diskimage.ReadSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("Impossible to find a cloud init provider (%w)", err)
	}
	ud := files["user-data"]
	if first, _, _ := strings.Cut(ud, "\n"); strings.TrimSpace(first) != "#cloud-config" {
		return nil, nil
	}
	var cc cloudConfig
	if err := yaml.Unmarshal([]byte(ud), &cc); err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	written, err := g.applySSHKeys(m, cc.SSHKeys)
	if err != nil {
		return written, err
	}
	if len(cc.AuthorizedKeys) == 0 {
		return written, nil
	}
	dot := filepath.Join(m, u.home, ".ssh")
	if err := os.MkdirAll(dot, 0o700); err != nil {
		return written, err
	}
	ak := filepath.Join(dot, "authorized_keys")
	f, err := os.OpenFile(ak, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return written, err
	}
	_, werr := f.WriteString(strings.Join(cc.AuthorizedKeys, "\n") + "\n")
	if err := f.Close(); err != nil || werr != nil {
		return written, fmt.Errorf("write %s: %v %v", ak, werr, err)
	}
	g.logf("nuageinit: %d key(s) for the default user from %s", len(cc.AuthorizedKeys), seed)
	return written, chownTree(dot, u.uid, u.gid)
}

// applySSHKeys writes ssh_keys' host keys; the private key's content is
// never logged.
func (g *guestInit) applySSHKeys(m string, keys map[string]string) (map[string]bool, error) {
	written := map[string]bool{}
	for name, priv := range keys {
		alg, ok := strings.CutSuffix(name, "_private")
		if !ok {
			continue
		}
		base := filepath.Join(m, "etc/ssh/ssh_host_"+alg+"_key")
		if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
			return written, err
		}
		// Replace whatever the overlay or the template's disk had there.
		_ = os.Remove(base)
		if err := os.WriteFile(base, []byte(priv), 0o600); err != nil {
			return written, err
		}
		if pub := keys[alg+"_public"]; pub != "" {
			_ = os.Remove(base + ".pub")
			if err := os.WriteFile(base+".pub", []byte(strings.TrimSpace(pub)+"\n"), 0o644); err != nil {
				return written, err
			}
		}
		written[alg] = true
		g.logf("nuageinit: %s host key from the seed", alg)
	}
	return written, nil
}

func writeHostKey(path, name string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "root@"+name)
	if err != nil {
		return err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	_ = os.Remove(path)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " root@" + name + "\n"
	_ = os.Remove(path + ".pub")
	return os.WriteFile(path+".pub", []byte(line), 0o644)
}

func emptyRootPassword(shadow string) error {
	b, err := os.ReadFile(shadow)
	if err != nil {
		return fmt.Errorf("read guest shadow: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if f := strings.Split(l, ":"); len(f) > 1 && f[0] == "root" {
			f[1] = ""
			lines[i] = strings.Join(f, ":")
		}
	}
	return os.WriteFile(shadow, []byte(strings.Join(lines, "\n")), 0o640)
}

// standins are the FreeBSD commands the default provisioning script calls,
// as sh scripts for the Debian guest. Each records its arguments in
// /var/log/bhyve-sim-standins.log and leaves the state FreeBSD's command
// would (user, packages, rc.conf lines), no more.
var standins = map[string]string{
	"pkg": `# pkg(8): install/upgrade/info/clean. Installed names go to
# /var/db/bhyve-sim/pkg-installed; bash and git get the /usr/local/bin paths
# FreeBSD's packages install, pointing at Debian's binaries.
sub=""
for a in "$@"; do case "$a" in -*) ;; *) sub="$a"; break ;; esac; done
case "$sub" in
install)
	mkdir -p /var/db/bhyve-sim
	skip=1
	for a in "$@"; do
		if [ "$skip" = 1 ]; then [ "$a" = install ] && skip=0; continue; fi
		case "$a" in -*) continue ;; esac
		grep -qx "$a" /var/db/bhyve-sim/pkg-installed 2>/dev/null || echo "$a" >> /var/db/bhyve-sim/pkg-installed
		case "$a" in
		bash) ln -sf /bin/bash /usr/local/bin/bash ;;
		git) ln -sf /usr/bin/git /usr/local/bin/git ;;
		esac
	done ;;
upgrade|update|clean|bootstrap) ;;
info) cat /var/db/bhyve-sim/pkg-installed 2>/dev/null ;;
*) echo "pkg (bhyve-sim stand-in): $sub not simulated" >&2; exit 1 ;;
esac
`,
	"pw": `# pw(8): usershow and useradd (NAME or -n NAME, -m, -s, -c, -d), via
# Debian's useradd; the password field becomes "*" (no password, key logins
# allowed), as pw leaves a new account. Exit 67 is pw's EX_NOUSER. -m
# copies FreeBSD's /usr/share/skel, whose dot files are for sh and csh: no
# .bash_logout. Debian's /etc/skel/.bash_logout runs clear_console, which
# fails without a terminal and so fails every upstream job script (bash -l
# under set -e), so the home starts from an empty skeleton instead.
sub="$1"; shift
name=""; shell=/bin/sh; gecos=""; home=""; mk=""
case "$1" in -*|"") ;; *) name="$1"; shift ;; esac
while [ $# -gt 0 ]; do
	case "$1" in
	-n) name="$2"; shift 2 ;;
	-s) shell="$2"; shift 2 ;;
	-c) gecos="$2"; shift 2 ;;
	-d) home="$2"; shift 2 ;;
	-m) mk=-m; shift ;;
	*) shift ;;
	esac
done
case "$sub" in
usershow) # master.passwd(5) order: name:pw:uid:gid:class:change:expire:gecos:home:shell
	e=$(getent passwd "$name") || { echo "pw: no such user '$name'" >&2; exit 67; }
	echo "$e" | awk -F: '{ printf "%s:*:%s:%s::0:0:%s:%s:%s\n", $1, $3, $4, $5, $6, $7 }' ;;
useradd)
	# -m copies FreeBSD's /usr/share/skel (dot.profile, dot.shrc...), never
	# Debian's /etc/skel, whose .bash_logout runs clear_console and fails
	# every login shell that has no terminal.
	mkdir -p /var/db/bhyve-sim/skel
	/usr/sbin/useradd $mk ${mk:+-k /var/db/bhyve-sim/skel} -s "$shell" -c "$gecos" ${home:+-d "$home"} "$name" || exit 1
	/usr/sbin/usermod -p '*' "$name"
	mkdir -p /var/db/bhyve-sim && echo "$name" >> /var/db/bhyve-sim/users ;;
*) echo "pw (bhyve-sim stand-in): $sub not simulated" >&2; exit 1 ;;
esac
`,
	"sysrc": `# sysrc(8) on /etc/rc.conf (or -f FILE): name=value replaces the last
# assignment or appends one.
file=/etc/rc.conf
[ "$1" = -f ] && { file="$2"; shift 2; }
touch "$file"
for a in "$@"; do
	case "$a" in
	*=*) k="${a%%=*}"; v="${a#*=}"
		grep -v "^$k=" "$file" > "$file.new" || true
		printf '%s="%s"\n' "$k" "$v" >> "$file.new"
		mv "$file.new" "$file"
		echo "$k: -> $v" ;;
	*) sed -n "s/^$a=//p" "$file" | tr -d '"' ;;
	esac
done
`,
	"service": `# service(8): nothing to restart; the simulated guest's sshd keeps the
# configuration bhyve-sim gave it.
exit 0
`,
	"freebsd-version": `echo 14.2-RELEASE
`,
}

func writeStandins(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, body := range standins {
		script := "#!/bin/sh\n# bhyve-sim SIMULATION STAND-IN for FreeBSD's " + name + "(8); not the real command.\n" +
			"echo \"$(date '+%F %T') " + name + " $*\" >> /var/log/bhyve-sim-standins.log\n" + body
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// noPersist are the parts of the guest root that are the simulator's, not
// the guest's: regenerated at every boot, never written to the disk.
func noPersist(rel string) bool {
	for _, p := range []string{".oldroot", "etc/bhyve-sim", "etc/hostname", strings.TrimPrefix(sshdConf, "/"),
		strings.TrimPrefix(standinDir, "/"), "proc", "sys", "dev", "run", "tmp", "var/tmp"} {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

// persist writes the guest's changes (the overlay's upper layer) back to
// its disk, replacing what was there: everything on the disk was laid into
// the upper layer at boot, so what is missing now was deleted. Deletions
// of the machine's own files (overlay whiteouts) cannot be expressed on a
// disk that is laid over the machine's root, and are dropped.
func persist(upper, disk string) error {
	entries, err := os.ReadDir(disk)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(disk, e.Name())); err != nil {
			return err
		}
	}
	return tree.Copy(upper, disk, noPersist)
}
