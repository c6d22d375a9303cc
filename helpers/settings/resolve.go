package settings

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
)

// builtin is the lowest layer of the overlay, in the raw form the decoder
// produces, so that built-in, [defaults] and runner values go through the same
// checks. REFERENCE.md repeats these values; a test keeps the two in step.
var builtin = map[string]any{
	"snapshot":                         "base",
	"allowed_images":                   []any{},
	"vm_command":                       []any{"/usr/local/sbin/vm"},
	"sysrc_command":                    []any{"/usr/sbin/sysrc"},
	"zfs_command":                      []any{"/sbin/zfs"},
	"sysctl_command":                   []any{},
	"install_command":                  []any{"/usr/bin/install"},
	"rm_command":                       []any{"/bin/rm"},
	"host_keys":                        HostKeysAuto,
	"privilege":                        []any{"/usr/local/bin/sudo", "-n"},
	"isolation":                        true,
	"arp_command":                      []any{"/usr/sbin/arp"},
	"ifconfig_command":                 []any{"/sbin/ifconfig"},
	"vm_dir":                           "/vm",
	"lease_file":                       "/var/db/kea/kea-leases4.csv",
	"name_prefix":                      "ci-",
	"boot_timeout":                     "3m",
	"ssh_connect_timeout":              "10s",
	"stop_timeout":                     "30s",
	"kill_grace":                       "10s",
	"builds_dir":                       "/builds",
	"cache_dir":                        "/cache",
	"shell":                            "bash",
	"memory_reserve":                   "1G",
	"ssh.user":                         "gitlab-runner",
	"ssh.port":                         int64(22),
	"ssh.keepalive_interval":           "15s",
	"ssh.insecure_skip_host_key_check": false,
	"pool.idle_count":                  int64(0),
	"pool.idle_time":                   "30m",
	"pool.max_use_count":               int64(1),
	"pool.max_concurrent_boots":        int64(2),
}

const builtinSection = "built-in default"

// derived holds what Load parsed from the values and referenced files. The
// methods use it so that a job does not re-read files Load already checked.
type derived struct {
	allowed       []*regexp.Regexp
	allowedWhere  string // key that set allowed_images, for messages
	templateWhere string
	prefixWhere   string
	signers       []ssh.Signer
	hostKey       ssh.PublicKey
	knownHosts    *guestssh.KnownHosts
	pinWhere      string            // key that set host_key or known_hosts_file
	where         map[string]string // key -> where it is set, for the resource keys
}

// Load reads the settings of runnerName from the file at path. An empty
// runnerName selects the file's only [runners."NAME"] section. It reads the
// settings file and the files it references (identity, known_hosts, password)
// and nothing else; every error is a *failure.ConfigError.
func Load(path, runnerName string) (*Settings, error) {
	s, errs := load(path, runnerName)
	if len(errs) > 0 {
		return nil, failure.Configf("%w", errors.Join(errs...))
	}
	return s, nil
}

// RunnerNames lists the [runners."NAME"] sections of the file at path, sorted,
// so that operator tools can Load each one.
func RunnerNames(path string) ([]string, error) {
	_, md, doc, err := parseFile(path)
	if err != nil {
		return nil, failure.Configf("%w", err)
	}
	runners, err := runnerSections(path, &md, doc)
	if err != nil {
		return nil, failure.Configf("%w", err)
	}
	return sortedKeys(runners), nil
}

func parseFile(file string) (os.FileMode, toml.MetaData, document, error) {
	var doc document
	data, mode, err := readRegular(file)
	if err != nil {
		return 0, toml.MetaData{}, doc, fmt.Errorf("%s: cannot read the settings file: %w; expected %s next to gitlab-runner's config.toml (see REFERENCE.md)", file, err, FileName)
	}
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return 0, md, doc, fmt.Errorf("%s: line %d: %s; expected valid TOML", file, pe.Position.Line, pe.Message)
		}
		return 0, md, doc, fmt.Errorf("%s: %w; expected valid TOML", file, err)
	}
	return mode, md, doc, nil
}

func runnerSections(file string, md *toml.MetaData, doc document) (map[string]toml.Primitive, error) {
	runners := map[string]toml.Primitive{}
	if !md.IsDefined("runners") {
		return runners, nil
	}
	if md.Type("runners") == "ArrayHash" {
		return nil, fmt.Errorf(`%s: runners: [[runners]] is config.toml syntax; expected [runners."NAME"] sections named after each runner's name in config.toml`, file)
	}
	if err := checkTable(file, md, toml.Key{"runners"}, "runners"); err != nil {
		return nil, err
	}
	if err := md.PrimitiveDecode(doc.Runners, &runners); err != nil {
		return nil, fmt.Errorf("%s: runners: %w", file, err)
	}
	return runners, nil
}

func selectRunner(file, want string, runners map[string]toml.Primitive) (string, error) {
	names := sortedKeys(runners)
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = quoteKey(n)
	}
	const how = `sections are named after the runner's name in config.toml; an empty section inherits [defaults]`
	switch {
	case want != "":
		if _, ok := runners[want]; ok {
			return want, nil
		}
		if len(names) == 0 {
			return "", fmt.Errorf("%s: %s: no such section and no runner sections at all; expected a [%s] section (%s)", file, sectionName(want), sectionName(want), how)
		}
		return "", fmt.Errorf("%s: %s: no such section; this file has sections for %s (%s)", file, sectionName(want), strings.Join(quoted, ", "), how)
	case len(names) == 1:
		return names[0], nil
	case len(names) == 0:
		return "", fmt.Errorf(`%s: runners: no [runners."NAME"] section; expected one (%s)`, file, how)
	default:
		return "", fmt.Errorf("%s: runners: several sections (%s) and no runner name to choose between them; expected the caller to pass the runner's name", file, strings.Join(quoted, ", "))
	}
}

func load(file, runnerName string) (*Settings, []error) {
	mode, md, doc, err := parseFile(file)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	if mode&0o002 != 0 {
		errs = append(errs, fmt.Errorf("%s: is writable by every user (mode %04o); expected chmod 644 or stricter, since it chooses the commands run with privilege", file, mode.Perm()))
	}
	runners, err := runnerSections(file, &md, doc)
	if err != nil {
		return nil, append(errs, err)
	}
	name, err := selectRunner(file, runnerName, runners)
	if err != nil {
		return nil, append(errs, err)
	}
	defaults, err := decodeSection(file, &md, doc.Defaults, toml.Key{"defaults"}, "defaults")
	if err != nil {
		errs = append(errs, err)
	}
	runner, err := decodeSection(file, &md, runners[name], toml.Key{"runners", name}, sectionName(name))
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// Unknown keys are reported alone: the decoder matches field names
	// case-insensitively, so with "Template" and "template" both present the
	// values would be unreliable until the spelling is fixed.
	if err := unknownKeys(file, &md, name); err != nil {
		return nil, []error{err}
	}
	r := &resolver{
		file:     file,
		dir:      filepath.Dir(file),
		mode:     mode,
		sections: []section{runner, defaults, {name: builtinSection, values: builtin}},
	}
	s := r.resolve(name)
	errs = append(errs, r.errs...)
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// resolver overlays the sections and converts each value, collecting every
// problem so an operator can fix the file in one pass.
type resolver struct {
	file     string
	dir      string
	mode     os.FileMode
	sections []section // most specific first
	errs     []error
}

// lookup finds key in the most specific section that sets it. where names
// the key as written in that section; for a built-in or unset value it names
// the runner's section, where the operator would change it.
func (r *resolver) lookup(key string) (v any, where string, ok bool) {
	for _, sec := range r.sections {
		if v, ok := sec.values[key]; ok {
			if sec.name == builtinSection {
				return v, r.sections[0].name + "." + key, true
			}
			return v, sec.name + "." + key, true
		}
	}
	return nil, r.sections[0].name + "." + key, false
}

func (r *resolver) fail(where, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s: "+format, append([]any{r.file, where}, args...)...))
}

func (r *resolver) wrongType(where string, v any, want, expect string) {
	r.fail(where, "%s is %s, not %s; expected %s", render(v), kind(v), want, expect)
}

func (r *resolver) str(key, expect string) (val, where string, set bool) {
	v, where, ok := r.lookup(key)
	if !ok {
		return "", where, false
	}
	s, isStr := v.(string)
	if !isStr {
		r.wrongType(where, v, "a string", expect)
		return "", where, false
	}
	return s, where, true
}

// strMatching returns a string that satisfies valid, or the fallback after
// recording why not.
func (r *resolver) strMatching(key, expect string, valid func(string) bool) string {
	s, where, set := r.str(key, expect)
	if set && !valid(s) {
		r.fail(where, "%s is not valid; expected %s", strconv.Quote(s), expect)
	}
	return s
}

const durationExpect = `a duration such as "90s", "3m" or "1h30m"`

func (r *resolver) duration(key string) time.Duration {
	s, where, set := r.str(key, durationExpect)
	if !set {
		return 0
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		r.fail(where, "%s is not a duration; expected %s", strconv.Quote(s), durationExpect)
	case d <= 0:
		r.fail(where, "%s is not positive; expected %s", strconv.Quote(s), durationExpect)
	}
	return d
}

func (r *resolver) integer(key string, lo, hi int64, expect string) int {
	v, where, ok := r.lookup(key)
	if !ok {
		return 0
	}
	n, isInt := v.(int64)
	if !isInt {
		r.wrongType(where, v, "an integer", expect)
		return 0
	}
	if n < lo || n > hi {
		r.fail(where, "%d is out of range; expected %s", n, expect)
	}
	return int(n)
}

func (r *resolver) boolean(key string) bool {
	v, where, ok := r.lookup(key)
	if !ok {
		return false
	}
	b, isBool := v.(bool)
	if !isBool {
		r.wrongType(where, v, "a boolean", "true or false")
	}
	return b
}

// argv reads an array of strings. Commands are arrays, never one string,
// because they are executed without a shell: there is no word splitting to
// rely on, and none for an attacker to exploit.
func (r *resolver) argv(key string, minLen int, expect string) ([]string, string) {
	v, where, ok := r.lookup(key)
	if !ok {
		return nil, where
	}
	arr, isArr := v.([]any)
	if !isArr {
		r.wrongType(where, v, "an array of strings", expect)
		return nil, where
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		elemWhere := fmt.Sprintf("%s[%d]", where, i)
		s, isStr := e.(string)
		switch {
		case !isStr:
			r.wrongType(elemWhere, e, "a string", expect)
		case s == "":
			r.fail(elemWhere, "is an empty string; expected %s", expect)
		case strings.ContainsAny(s, "\x00\n\r"):
			r.fail(elemWhere, "%s contains a control character; expected %s", strconv.Quote(s), expect)
		default:
			out = append(out, s)
		}
	}
	if len(arr) < minLen {
		r.fail(where, "is empty; expected %s", expect)
	}
	return out, where
}

// hostPath resolves a host file path. Relative paths are taken relative to
// the settings file, not the process's working directory, which differs
// between the service, run-single and a shell.
func (r *resolver) hostPath(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(r.dir, p)
}

var (
	vmNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	prefixRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	snapshotRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$`)
	hostIDRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
	userRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$`)
	maxVMNameLen = 229
)

// ValidVMName reports whether name is acceptable as a vm-bhyve VM name here:
// vm-bhyve's own charset (lowercase letters, digits, '_' and '-', starting
// with a letter or digit) without '.', which vm-bhyve allows but feeds to
// pgrep as a regular expression, so "ci.1" would also match "ci-1".
func ValidVMName(name string) bool {
	return len(name) <= maxVMNameLen && vmNameRE.MatchString(name)
}

const vmNameExpect = "a vm-bhyve VM name: lowercase letters, digits, '_' and '-', starting with a letter or digit, no '.', at most 229 characters"

func guestDirValid(p string) bool {
	return path.IsAbs(p) && path.Clean(p) == p && p != "/" && !strings.ContainsAny(p, "\x00\n\r\t")
}

func (r *resolver) resolve(runnerName string) *Settings {
	d := &derived{}
	s := &Settings{RunnerName: runnerName, Path: r.file, d: d}

	var set bool
	s.Template, d.templateWhere, set = r.str("template", vmNameExpect)
	if r.isUnset("template") {
		r.fail(d.templateWhere, "not set here or in [defaults]; expected the vm-bhyve template VM that jobs without image: run in, e.g. template = \"freebsd-14\"")
	} else if set && !ValidVMName(s.Template) {
		r.fail(d.templateWhere, "%s is not a valid name; expected %s", strconv.Quote(s.Template), vmNameExpect)
	}
	s.Snapshot = r.strMatching("snapshot", "a ZFS snapshot name: letters, digits, '_', '.', ':' and '-', starting with a letter, digit or '_', at most 200 characters", snapshotRE.MatchString)

	s.AllowedImages, d.allowed, d.allowedWhere = r.allowedImages()

	s.VMCommand, _ = r.argv("vm_command", 1, `an argv array such as ["/usr/local/sbin/vm"]`)
	s.SysrcCommand, _ = r.argv("sysrc_command", 1, `an argv array such as ["/usr/sbin/sysrc"]`)
	s.ZFSCommand, _ = r.argv("zfs_command", 1, `an argv array such as ["/sbin/zfs"]`)
	s.SysctlCommand, _ = r.argv("sysctl_command", 0, `an argv array such as ["/sbin/sysctl"], or [] to read the kernel's variables directly`)
	s.InstallCommand, _ = r.argv("install_command", 1, `an argv array such as ["/usr/bin/install"]`)
	s.RmCommand, _ = r.argv("rm_command", 1, `an argv array such as ["/bin/rm"]`)
	s.HostKeys = r.strMatching("host_keys", fmt.Sprintf("%q, %q or %q", HostKeysAuto, HostKeysPerVM, HostKeysTemplate), validHostKeysMode)
	s.Privilege, _ = r.argv("privilege", 0, `an argv prefix such as ["/usr/local/bin/sudo", "-n"], ["/usr/local/bin/doas", "-n"] or [] when running as root`)
	s.Isolation = r.boolean("isolation")
	s.ArpCommand, _ = r.argv("arp_command", 1, `an argv array such as ["/usr/sbin/arp"]`)
	s.IfconfigCommand, _ = r.argv("ifconfig_command", 1, `an argv array such as ["/sbin/ifconfig"]`)

	absHost := func(p string) bool { return filepath.IsAbs(p) && !strings.ContainsAny(p, "\x00\n") }
	s.VMDir = filepath.Clean(r.strMatching("vm_dir", `an absolute path, the mountpoint of vm-bhyve's vm_dir dataset such as "/vm"`, absHost))
	s.LeaseFile = filepath.Clean(r.strMatching("lease_file", `an absolute path such as "/var/db/kea/kea-leases4.csv"`, absHost))

	var prefixSet bool
	const prefixExpect = "1 to 32 of lowercase letters, digits, '_' and '-', starting with a letter or digit (vm-bhyve's name charset without '.')"
	s.NamePrefix, d.prefixWhere, prefixSet = r.str("name_prefix", prefixExpect)
	if prefixSet && !prefixRE.MatchString(s.NamePrefix) {
		r.fail(d.prefixWhere, "%s is not valid; expected %s", strconv.Quote(s.NamePrefix), prefixExpect)
		prefixSet = false
	}
	if set && prefixSet && strings.HasPrefix(s.Template, s.NamePrefix) {
		r.fail(d.templateWhere, "%s starts with name_prefix %s, which marks the VMs this executor creates and destroys; expected a template name outside that prefix, or another name_prefix", strconv.Quote(s.Template), strconv.Quote(s.NamePrefix))
	}

	s.HostID = r.hostID()

	s.BootTimeout = r.duration("boot_timeout")
	s.SSHConnectTimeout = r.duration("ssh_connect_timeout")
	s.StopTimeout = r.duration("stop_timeout")
	s.KillGrace = r.duration("kill_grace")

	const guestExpect = "an absolute guest path other than \"/\", such as %q"
	s.BuildsDir = r.strMatching("builds_dir", fmt.Sprintf(guestExpect, "/builds"), guestDirValid)
	s.CacheDir = r.strMatching("cache_dir", fmt.Sprintf(guestExpect, "/cache"), guestDirValid)
	s.Shell = r.strMatching("shell", `"bash" or "sh"`, func(v string) bool { return v == "bash" || v == "sh" })

	r.resolveResources(s, d)
	r.resolveSSH(s, d)

	s.Pool.IdleCount = r.integer("pool.idle_count", 0, 1<<20, "an integer of 0 or more")
	s.Pool.IdleTime = r.duration("pool.idle_time")
	s.Pool.MaxUseCount = r.integer("pool.max_use_count", 1, 1<<31-1, "an integer of 1 or more (1: every job gets a fresh VM)")
	s.Pool.MaxConcurrentBoots = r.integer("pool.max_concurrent_boots", 1, 1<<10, "an integer of 1 or more")
	return s
}

// resolveResources reads the caps on what jobs may ask for and the memory
// admission keeps free. An unset cap is 0: the template's own size.
func (r *resolver) resolveResources(s *Settings, d *derived) {
	d.where = map[string]string{}
	var where string
	s.MaxCPUs = r.integer("max_cpus", 1, 4096, "an integer of 1 or more, the most vCPUs a job may ask for with BHYVE_CPUS (unset: the template's cpu)")
	_, d.where["max_cpus"], _ = r.lookup("max_cpus")
	s.MaxMemory, where = r.size("max_memory", false, "the most memory a job may ask for with BHYVE_MEMORY (unset: the template's memory)")
	d.where["max_memory"] = where
	s.MemoryReserve, where = r.size("memory_reserve", true, "the host memory that must stay free when a job VM starts, or \"0\"")
	d.where["memory_reserve"] = where
}

// size reads a memory size such as "8G"; with zeroOK, "0" too.
func (r *resolver) size(key string, zeroOK bool, what string) (hostmem.Size, string) {
	expect := hostmem.SizeExpect + ": " + what
	text, where, set := r.str(key, expect)
	if !set {
		return 0, where
	}
	if zeroOK && text == "0" {
		return 0, where
	}
	n, err := hostmem.ParseSize(text)
	if err != nil {
		r.fail(where, "%s is not a memory size; expected %s", strconv.Quote(text), expect)
	}
	return n, where
}

// isUnset reports whether no section, the built-in one included, sets key.
func (r *resolver) isUnset(key string) bool {
	_, _, ok := r.lookup(key)
	return !ok
}

func (r *resolver) allowedImages() ([]string, []*regexp.Regexp, string) {
	const expect = "regular expressions (RE2 syntax) matched against the whole image name"
	pats, where := r.argv("allowed_images", 0, expect)
	res := make([]*regexp.Regexp, 0, len(pats))
	for i, p := range pats {
		re, err := compileAnchored(p)
		if err != nil {
			r.fail(fmt.Sprintf("%s[%d]", where, i), "%s is not a valid regular expression (%v); expected %s", strconv.Quote(p), err, expect)
			continue
		}
		res = append(res, re)
	}
	return pats, res, where
}

// compileAnchored anchors a pattern to the whole name. Upstream's
// allowed_images is unanchored, so "freebsd" there admits "evil-freebsd-x";
// here a pattern must describe the entire name.
func compileAnchored(p string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(p); err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + p + `)$`)
}

func (r *resolver) hostID() string {
	const expect = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 253 characters"
	v, where, set := r.str("host_id", expect)
	if !set {
		if r.isUnset("host_id") {
			h, err := os.Hostname()
			if err != nil {
				r.fail(where, "not set and the host name is unknown (%v); expected host_id = \"NAME\"", err)
				return ""
			}
			if !hostIDRE.MatchString(h) {
				r.fail(where, "not set and the host name %s is not usable; expected host_id = \"NAME\" of letters, digits, '.', '_' and '-'", strconv.Quote(h))
			}
			return h
		}
		return ""
	}
	if !hostIDRE.MatchString(v) {
		r.fail(where, "%s is not valid; expected %s", strconv.Quote(v), expect)
	}
	return v
}

func (r *resolver) resolveSSH(s *Settings, d *derived) {
	s.SSH.User = r.strMatching("ssh.user", "a user name of letters, digits, '_', '.' and '-', at most 32 characters", userRE.MatchString)
	s.SSH.Port = r.integer("ssh.port", 1, 65535, "an integer from 1 to 65535")
	s.SSH.KeepAliveInterval = r.duration("ssh.keepalive_interval")
	s.SSH.InsecureSkipHostKeyCheck = r.boolean("ssh.insecure_skip_host_key_check")
	_, insecureWhere, _ := r.lookup("ssh.insecure_skip_host_key_check")

	// An empty string unsets a path or secret inherited from [defaults], so a
	// runner can switch to the other alternative of a pair.
	// A value of the wrong type has been reported already; the keys that
	// depend on it then stay quiet rather than add "not set" noise.
	wrongType := false
	pathKey := func(key string) (string, string) {
		v, where, set := r.str(key, "a file path")
		if !set && !r.isUnset(key) {
			wrongType = true
		}
		if !set || v == "" {
			return "", where
		}
		return r.hostPath(v), where
	}

	// Password: inline or from a file, not both.
	pw, pwWhere, _ := r.lookupSecretString("ssh.password")
	pwFile, pwFileWhere := pathKey("ssh.password_file")
	switch {
	case pw != "" && pwFile != "":
		r.fail(pwWhere, "is set together with %s; expected only one of them (set one to \"\" to drop an inherited value)", pwFileWhere)
	case pw != "":
		if r.mode&0o004 != 0 {
			r.fail(pwWhere, "is in a file every user can read (mode %04o); expected chmod 640 or 600 on %s, or password_file instead", r.mode.Perm(), r.file)
		}
		s.SSH.Password = Secret(pw)
	case pwFile != "":
		s.SSH.PasswordFile = pwFile
		secret, err := readPasswordFile(pwFile)
		if err != nil {
			r.fail(pwFileWhere, "%v", err)
		}
		s.SSH.Password = secret
	}

	idFile, idWhere := pathKey("ssh.identity_file")
	s.SSH.IdentityFile = idFile
	if idFile != "" {
		signer, err := readIdentity(idFile)
		if err != nil {
			r.fail(idWhere, "%v", err)
		} else {
			d.signers = []ssh.Signer{signer}
		}
	} else if s.SSH.Password == "" && pwFile == "" && !wrongType {
		r.fail(idWhere, "not set here or in [defaults], and neither is a password; expected the private key (without passphrase) whose public half is in the template's authorized_keys for user %s", strconv.Quote(s.SSH.User))
	}

	khFile, khWhere := pathKey("ssh.known_hosts_file")
	hostKey, hkWhere, hkSet := r.str("ssh.host_key", `one public key line such as "ssh-ed25519 AAAA..."`)
	if !hkSet && !r.isUnset("ssh.host_key") {
		wrongType = true
	}
	s.SSH.KnownHostsFile, s.SSH.HostKey = khFile, hostKey
	switch {
	case khFile != "" && hostKey != "":
		r.fail(khWhere, "is set together with %s; expected exactly one way of pinning host keys (set one to \"\" to drop an inherited value)", hkWhere)
	case (khFile != "" || hostKey != "") && s.SSH.InsecureSkipHostKeyCheck:
		pinWhere := khWhere
		if hostKey != "" {
			pinWhere = hkWhere
		}
		r.fail(insecureWhere, "is true while %s pins a host key; expected either a pinned key or insecure_skip_host_key_check, not both", pinWhere)
	case khFile != "":
		d.pinWhere = khWhere
		hosts, err := readKnownHosts(khFile)
		if err != nil {
			r.fail(khWhere, "%v", err)
			return
		}
		d.knownHosts = hosts
		if ValidVMName(s.Template) {
			if _, err := keysFor(hosts, s.Template, khFile); err != nil {
				r.fail(khWhere, "%v", err)
			}
		}
	case hostKey != "":
		d.pinWhere = hkWhere
		key, err := parseHostKey(hostKey)
		if err != nil {
			r.fail(hkWhere, "%v", err)
			return
		}
		d.hostKey = key
	case !s.SSH.InsecureSkipHostKeyCheck && !wrongType:
		r.fail(khWhere, "no host key is pinned (neither known_hosts_file nor host_key is set); expected %s", pinHowTo(s.Template))
	}
}

// pinHowTo tells an operator how to obtain the key to pin.
func pinHowTo(template string) string {
	if template == "" {
		template = "TEMPLATE"
	}
	return fmt.Sprintf("known_hosts_file = \"known_hosts\" with a line \"%[1]s ssh-ed25519 AAAA...\" or host_key = \"ssh-ed25519 AAAA...\"; "+
		"get the key by booting the template (vm start %[1]s) and running ssh-keyscan -t ed25519 ADDRESS, or cat /etc/ssh/ssh_host_ed25519_key.pub on its console; "+
		"insecure_skip_host_key_check = true accepts any key but lets anyone on the VM network impersonate the VM", template)
}

// lookupSecretString is str for secrets: a wrong type is reported without
// echoing the value.
func (r *resolver) lookupSecretString(key string) (string, string, bool) {
	v, where, ok := r.lookup(key)
	if !ok {
		return "", where, false
	}
	s, isStr := v.(string)
	if !isStr {
		r.fail(where, "the value is %s, not a string; expected a string (or password_file)", kind(v))
		return "", where, false
	}
	return s, where, true
}

// abbreviate keeps messages about long key lines readable.
func abbreviate(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// render shows a TOML value in TOML syntax for messages.
func render(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = render(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := sortedKeys(x)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + " = " + render(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case []map[string]any:
		return "[[...]]"
	default:
		return fmt.Sprint(x)
	}
}

func kind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	default:
		return "a date-time"
	}
}
