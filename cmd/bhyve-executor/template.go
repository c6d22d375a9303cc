package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// defaultProvision is the provisioning script every template build and
// rotation runs first (provision/default.sh in the repository).
//
//go:embed provision/default.sh
var defaultProvision string

// becomeRoot is how the script reaches root from the image's default user:
// FreeBSD's VM images ship root without a password and the default user in
// wheel, so su asks nothing (pam_unix nullok). -m keeps the session's PATH.
const becomeRoot = "su -m root -c 'sh -s'"

var templateSubcommands = []struct{ name, usage string }{
	{"build", "NAME --image FILE [--size S] [--cpus N] [--memory M] [--profile P] [--switch SW] [--provision SCRIPT] [--packages 'P ...'] [--runner-binary PATH | --runner-url URL] [--admin-user U] [--dry-run]"},
	{"check", "NAME [--runner-binary PATH]"},
	{"rotate", "NAME [--provision SCRIPT] [--packages 'P ...'] [--keep N] [--runner-binary PATH | --runner-url URL] [--admin-user U]"},
	{"prune", "NAME [--keep N]"},
	{"rollback", "NAME"},
}

// templateCommand dispatches `template SUBCOMMAND`.
func templateCommand(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 {
		return templateUsage()
	}
	rest := args[1:]
	switch args[0] {
	case "build":
		return templateBuild(ctx, a, rest)
	case "check":
		return templateCheck(ctx, a, rest)
	case "rotate":
		return templateRotate(ctx, a, rest)
	case "prune":
		return templatePrune(ctx, a, rest)
	case "rollback":
		return templateRollback(ctx, a, rest)
	}
	return templateUsage()
}

func templateUsage() error {
	var b strings.Builder
	b.WriteString("usage:")
	for _, c := range templateSubcommands {
		fmt.Fprintf(&b, "\n  template %s %s", c.name, c.usage)
	}
	return usagef("%s", b.String())
}

// splitName takes the template NAME from the front of args (flags may come
// before or after it).
func splitName(args []string) (string, []string) {
	for i, arg := range args {
		if !strings.HasPrefix(arg, "-") {
			if i > 0 && !strings.Contains(args[i-1], "=") && flagTakesValue(args[i-1]) {
				continue
			}
			return arg, append(append([]string{}, args[:i]...), args[i+1:]...)
		}
	}
	return "", args
}

func flagTakesValue(f string) bool {
	switch strings.TrimLeft(f, "-") {
	case "dry-run":
		return false
	}
	return true
}

// templateEnv is what every template subcommand works with.
type templateEnv struct {
	a    *app
	s    *settings.Settings
	d    *vmbhyve.Driver
	name string
}

func (a *app) templateEnv(name string) (*templateEnv, error) {
	if !settings.ValidVMName(name) {
		return nil, usagef("template name %q is not a valid vm-bhyve name (lowercase letters, digits, '_' and '-', starting with a letter or digit, no '.')", name)
	}
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(name, s.NamePrefix) {
		return nil, usagef("template name %q starts with name_prefix %q, which marks job VMs", name, s.NamePrefix)
	}
	h, err := a.host()
	if err != nil {
		return nil, err
	}
	return &templateEnv{a: a, s: s, d: h.Driver(s), name: name}, nil
}

func (e *templateEnv) logf(format string, args ...any) {
	fmt.Fprintf(e.a.stdout, "%s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// guest is a booted template (or clone) and the connection to it.
type guest struct {
	name   string
	addr   netip.Addr
	client *guestssh.Client
	// hostKey is what the guest presented.
	hostKey ssh.PublicKey
	ready   time.Duration // from vm start to SSH ready
}

// boot starts name, waits for vm-bhyve to run it, finds its address by the
// MAC in its conf and connects as user. With no pins the first host key is
// trusted (see README: only for a VM we just created from the operator's
// image on the isolated CI bridge).
func (e *templateEnv) boot(ctx context.Context, name, user string, pins []ssh.PublicKey) (*guest, error) {
	start := time.Now()
	bctx, cancel := context.WithTimeout(ctx, e.s.BootTimeout)
	defer cancel()
	if err := e.d.Start(bctx, name); err != nil {
		return nil, err
	}
	if _, err := e.d.WaitState(bctx, name, vmbhyve.InState(vmbhyve.StateRunning)); err != nil {
		return nil, fmt.Errorf("%s did not reach Running within boot_timeout %s: %w", name, e.s.BootTimeout, err)
	}
	conf, err := e.d.ReadConf(name)
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(conf["network0_mac"])
	if err != nil {
		return nil, fmt.Errorf("%s has no usable network0_mac in its conf (%q): %w", name, conf["network0_mac"], err)
	}
	w := kea.NewReader(e.s.LeaseFile).Watch(mac)
	lease, err := kea.Wait(bctx, w)
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("no DHCP lease for %s (MAC %s) in %s: %w", name, mac, e.s.LeaseFile, err)
	}
	g := &guest{name: name, addr: lease.Address}
	signers, err := e.s.Signers()
	if err != nil {
		return nil, err
	}
	cfg := guestssh.Config{
		User: user, Signers: signers, HostKeys: pins, HostKeyAlias: e.name,
		HandshakeTimeout: e.s.SSHConnectTimeout, KeepAliveInterval: e.s.SSH.KeepAliveInterval, KillGrace: e.s.KillGrace,
	}
	var seen ssh.PublicKey
	if len(pins) == 0 {
		cfg.TrustFirstKey = func(k ssh.PublicKey) { seen = k }
	}
	c, err := guestssh.Connect(bctx, net.JoinHostPort(g.addr.String(), strconv.Itoa(e.s.SSH.Port)), cfg)
	if err != nil {
		return g, err
	}
	g.client, g.ready = c, time.Since(start)
	g.hostKey = seen
	if len(pins) > 0 {
		g.hostKey = pins[0]
	}
	return g, nil
}

// run runs command in the guest and returns its output; a non-zero exit
// carries the output in the error.
func (g *guest) run(ctx context.Context, command string, stdin []byte) (string, error) {
	var out, errb bytes.Buffer
	err := g.client.Run(ctx, command, bytes.NewReader(stdin), &out, &errb)
	if err != nil {
		return out.String(), fmt.Errorf("%s: %q: %w\n%s%s", g.name, command, err, out.String(), errb.String())
	}
	return out.String(), nil
}

// stop shuts the template down through ACPI, up to stop_timeout, and
// waits for vm-bhyve to see it stopped. A template that had to be powered
// off is an error: the snapshot would carry a disk whose file systems
// were never unmounted into every clone.
func (e *templateEnv) stop(ctx context.Context, name string) error {
	sctx, cancel := context.WithTimeout(ctx, e.s.StopTimeout+time.Minute)
	defer cancel()
	err := e.d.ShutDown(sctx, name, e.s.StopTimeout)
	if errors.Is(err, vmbhyve.ErrPoweredOff) {
		return fmt.Errorf("%w; no snapshot taken of a disk that was not cleanly unmounted: raise stop_timeout in %s (now %s) or see why the guest ignores the ACPI power button (vm console %s), then run template rotate %s", err, e.s.Path, e.s.StopTimeout, name, e.name)
	}
	return err
}

// provisionVars are the variables the provisioning scripts read.
func (e *templateEnv) provisionVars(packages, upload, url string, upgrade bool) (string, error) {
	signers, err := e.s.Signers()
	if err != nil {
		return "", err
	}
	if len(signers) == 0 {
		return "", fmt.Errorf("%s: ssh.identity_file is not set; templates are built for key logins, set it to the runner's private key", e.s.Path)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signers[0].PublicKey())))
	up := "0"
	if upgrade {
		up = "1"
	}
	var b strings.Builder
	for _, kv := range [][2]string{
		{"JOB_USER", e.s.SSH.User}, {"JOB_KEY", key}, {"BUILDS_DIR", e.s.BuildsDir}, {"CACHE_DIR", e.s.CacheDir},
		{"PACKAGES", packages}, {"RUNNER_UPLOAD", upload}, {"RUNNER_URL", url}, {"UPGRADE", up},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shQuote(kv[1]))
	}
	return b.String(), nil
}

// provision copies the runner (when OS and architecture match), then runs
// the default script and the operator's, as root, printing their output.
func (e *templateEnv) provision(ctx context.Context, g *guest, o provisionOptions, upgrade bool) error {
	upload := ""
	url := o.runnerURL
	if o.runnerURL == "" {
		osarch, err := g.run(ctx, "uname -s; uname -m", nil)
		if err != nil {
			return err
		}
		guestOS, guestArch := splitUname(osarch)
		bin, err := os.ReadFile(o.runnerBinary)
		if err != nil {
			return fmt.Errorf("read the host's gitlab-runner %s (set --runner-binary, or --runner-url for a guest of another OS or architecture): %w", o.runnerBinary, err)
		}
		if hostOS, hostArch := hostPlatform(); guestOS != hostOS || guestArch != hostArch {
			return fmt.Errorf("the guest is %s/%s and this host %s/%s, so the host's gitlab-runner cannot be copied; pass --runner-url with the %s/%s binary of version %s", guestOS, guestArch, hostOS, hostArch, guestOS, guestArch, o.runnerVersion)
		}
		upload = "/tmp/gitlab-runner.upload"
		if _, err := g.run(ctx, "cat > "+upload+" && chmod 755 "+upload, bin); err != nil {
			return fmt.Errorf("copy gitlab-runner into %s: %w", g.name, err)
		}
	}
	vars, err := e.provisionVars(o.packages, upload, url, upgrade)
	if err != nil {
		return err
	}
	scripts := []struct{ name, body string }{{"default provisioning", defaultProvision}}
	if o.script != "" {
		b, err := os.ReadFile(o.script)
		if err != nil {
			return fmt.Errorf("--provision: %w", err)
		}
		scripts = append(scripts, struct{ name, body string }{o.script, string(b)})
	}
	for _, sc := range scripts {
		e.logf("running %s as root in %s", sc.name, g.name)
		var out bytes.Buffer
		err := g.client.Run(ctx, becomeRoot, strings.NewReader(vars+sc.body), &out, &out)
		for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
			if l != "" {
				fmt.Fprintf(e.a.stdout, "    | %s\n", l)
			}
		}
		if err != nil {
			return fmt.Errorf("%s failed in %s: %w", sc.name, g.name, err)
		}
	}
	return nil
}

type provisionOptions struct {
	script, packages, runnerBinary, runnerURL, runnerVersion string
}

func splitUname(out string) (string, string) {
	f := strings.Fields(out)
	if len(f) < 2 {
		return "unknown", "unknown"
	}
	return strings.ToLower(f[0]), goArch(f[1])
}

// goArch maps uname -m onto Go's architecture names.
func goArch(m string) string {
	switch m {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	case "i386", "i686":
		return "386"
	}
	return m
}

// runnerVersionRE reads "Version:      17.5.0" from gitlab-runner --version.
var runnerVersionRE = regexp.MustCompile(`(?m)^Version:\s+(\S+)`)

func parseRunnerVersion(out string) (string, bool) {
	m := runnerVersionRE.FindStringSubmatch(out)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// hostRunnerVersion runs the host's gitlab-runner --version.
func hostRunnerVersion(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w (set --runner-binary to the host's gitlab-runner)", bin, err)
	}
	v, ok := parseRunnerVersion(string(out))
	if !ok {
		return "", fmt.Errorf("%s --version printed no \"Version:\" line: %q", bin, out)
	}
	return v, nil
}

// pinHostKey writes "NAME KEY" into the known_hosts file, replacing the
// lines that pin exactly NAME and keeping every other line.
func pinHostKey(file, name string, key ssh.PublicKey) error {
	line := name + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	var keep []string
	mode := os.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	if data, err := os.ReadFile(file); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == name {
				continue
			}
			keep = append(keep, sc.Text())
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	keep = append(keep, line)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(keep, "\n")+"\n"), mode); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shArgv renders argv for a shell, each word quoted only when needed.
func shArgv(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`;&|<>()*?[]#~!{}") {
			out[i] = a
			continue
		}
		out[i] = shQuote(a)
	}
	return strings.Join(out, " ")
}

func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// hostPlatform is this host's OS and architecture in Go's terms.
func hostPlatform() (string, string) { return runtime.GOOS, runtime.GOARCH }
