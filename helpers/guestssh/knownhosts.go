package guestssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// KnownHosts is a known_hosts file, read by golang.org/x/crypto/ssh/knownhosts.
// It is the one known_hosts reader of the project: helpers/settings checks
// known_hosts_file with it at load time and serves HostKeysFor from it.
//
// Clone addresses change with every job, so our known_hosts files file a
// template's keys under a fixed alias, normally the template name, instead of
// an address. The library parses the file and matches the alias as it would
// a host name on port 22: comma-separated patterns, "*" and "?" wildcards,
// "!pattern" vetoing its line, "|1|salt|hash" names from ssh-keygen -H, and a
// @revoked key revoked whatever the host patterns of its line say (stricter
// than OpenSSH, which applies @revoked only to the hosts it matches: a key
// known to be compromised must not stay usable for another template).
//
// The library only answers "is this key right for this host", so KeysFor
// learns the pinned keys from its *knownhosts.KeyError for a key no file
// holds, and drops those the library calls revoked.
//
// checkLines refuses, naming the line, what the library cannot express or
// gets wrong for us, so that nothing fails open and typos fail loudly:
//   - "@cert-authority" lines, anywhere in the file: we pin keys and do not
//     verify certificates; the library's plain-key check even accepts a CA
//     line's key as a key of the hosts that line matches.
//   - A hashed name next to other patterns, or negated: the library treats
//     such a name as a literal that never matches, so "*,!|1|..." would
//     admit the very template it was meant to exclude.
//   - Empty patterns ("a,,b"), which the library skips, and hashed names
//     that cannot match (bad base64, not 20 bytes of HMAC-SHA1).
//   - Upper case in plain patterns: OpenSSH matches case-insensitively,
//     the library does not, and template names are lower case; "FreeBSD-14"
//     would silently pin nothing.
//
// A KnownHosts is immutable once read and safe for concurrent use.
type KnownHosts struct {
	path  string
	check ssh.HostKeyCallback
}

// ReadKnownHosts reads and checks every line of a known_hosts file. Blank
// lines and lines starting with '#' are skipped; a malformed line is an error
// naming its line number ("line 3: ..."), even if it would match no alias.
//
// The file is read twice, once for checkLines and once by the library, which
// only takes file names. Whoever could change it in between could as well
// pin a key of their own; helpers/settings refuses a file everyone may write.
func ReadKnownHosts(path string) (*KnownHosts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkLines(data); err != nil {
		return nil, err
	}
	check, err := knownhosts.New(path)
	if err != nil {
		return nil, lineError(path, err)
	}
	return &KnownHosts{path: path, check: check}, nil
}

// lineError restates the library's "knownhosts: FILE:N: ..." as "line N:
// ...": callers say which file they read.
func lineError(path string, err error) error {
	rest, ok := strings.CutPrefix(err.Error(), "knownhosts: "+path+":")
	if !ok {
		return err
	}
	num, msg, ok := strings.Cut(rest, ": ")
	if _, nerr := strconv.Atoi(num); !ok || nerr != nil {
		return err
	}
	return fmt.Errorf("line %s: %s", num, strings.TrimPrefix(msg, "knownhosts: "))
}

// checkLines applies the rules listed at KnownHosts to every line.
func checkLines(data []byte) error {
	for i, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSpace(string(bytes.TrimSuffix(raw, []byte("\r"))))
		if line == "" || line[0] == '#' {
			continue
		}
		if err := checkLine(line); err != nil {
			return fmt.Errorf("line %d: %w", i+1, err)
		}
	}
	return nil
}

func checkLine(line string) error {
	fields := strings.Fields(line)
	if strings.HasPrefix(fields[0], "@") {
		// OpenSSH's markers are case-sensitive.
		switch fields[0] {
		case "@revoked":
		case "@cert-authority":
			return fmt.Errorf("@cert-authority entries are not supported; pin the host key itself")
		default:
			return fmt.Errorf("unknown marker %s", strconv.Quote(fields[0]))
		}
		fields = fields[1:]
	}
	if len(fields) < 3 {
		return fmt.Errorf("has %d field(s), not \"[@MARKER] HOST-PATTERNS KEY-TYPE BASE64-KEY [COMMENT]\"", len(fields))
	}
	patterns := strings.Split(fields[0], ",")
	for _, p := range patterns {
		plain := strings.TrimPrefix(p, "!")
		switch {
		case plain == "":
			return fmt.Errorf("host pattern %s is empty", strconv.Quote(p))
		case strings.HasPrefix(plain, "|"):
			if len(patterns) > 1 || plain != p {
				return fmt.Errorf("host pattern %s: a hashed name must be the line's only host pattern, not negated", strconv.Quote(p))
			}
			if err := checkHashed(p); err != nil {
				return fmt.Errorf("host pattern %s %w", strconv.Quote(p), err)
			}
		case strings.ToLower(plain) != plain:
			return fmt.Errorf("host pattern %s has upper case letters; template names are lower case, write %s", strconv.Quote(p), strconv.Quote(strings.ToLower(p)))
		}
	}
	return nil
}

// checkHashed accepts what ssh-keygen -H writes:
// "|1|" + base64(salt) + "|" + base64(HMAC-SHA1(key=salt, host)).
func checkHashed(p string) error {
	parts := strings.Split(p, "|")
	if len(parts) != 4 || parts[0] != "" || parts[1] != "1" {
		return fmt.Errorf("is not a hashed name of the form |1|SALT|HASH")
	}
	_, err1 := base64.StdEncoding.DecodeString(parts[2])
	sum, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(sum) != sha1.Size {
		return fmt.Errorf("is not a hashed name of the form |1|SALT|HASH (bad base64)")
	}
	return nil
}

// LoadKnownHosts reads a known_hosts file and returns the keys filed under
// alias. See KnownHosts and KnownHosts.KeysFor.
func LoadKnownHosts(path, alias string) ([]ssh.PublicKey, error) {
	kh, err := ReadKnownHosts(path)
	if err != nil {
		return nil, failure.Configf("known_hosts_file %s: %w", path, err)
	}
	keys, err := kh.KeysFor(alias)
	if err != nil {
		return nil, failure.Configf("known_hosts_file %s: %w", path, err)
	}
	return keys, nil
}

// NoHostKeyError is KeysFor's error when no usable key is filed under Alias.
// Callers that know where the file came from (helpers/settings) use it to
// give their own advice.
type NoHostKeyError struct {
	Alias string
	// Revoked: lines matched Alias, but every one of their keys is @revoked.
	Revoked bool
}

func (e *NoHostKeyError) Error() string {
	if e.Revoked {
		return fmt.Sprintf("every host key for %q is marked @revoked; add the template's current host key", e.Alias)
	}
	return fmt.Sprintf("no host key for %q; add a line %q with the template's /etc/ssh/ssh_host_ed25519_key.pub", e.Alias, e.Alias+" ssh-ed25519 AAAA...")
}

// probeKey is a key no known_hosts file holds: checked against it, the
// library lists in its KeyError every key pinned for the host. Made per
// process, so no file can name it.
var probeKey = sync.OnceValues(func() (ssh.PublicKey, error) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(pub)
})

// KeysFor returns the keys of the lines whose host patterns match alias, in
// file order, each key once, without revoked keys. No such key is a
// *NoHostKeyError: an empty pin list would be useless. alias is matched in
// lower case, as OpenSSH matches host names.
func (kh *KnownHosts) KeysFor(alias string) ([]ssh.PublicKey, error) {
	if alias == "" {
		return nil, fmt.Errorf("known_hosts lookup needs a host alias (the template name)")
	}
	alias = strings.ToLower(alias)
	probe, err := probeKey()
	if err != nil {
		return nil, fmt.Errorf("known_hosts lookup for %q: %w", alias, err)
	}
	// The library matches "host:port", and unbracketed patterns mean port
	// 22; the guest's real port plays no part in which template it is.
	host := net.JoinHostPort(alias, "22")
	remote := &net.TCPAddr{IP: net.IPv4zero, Port: 22}
	var listed *knownhosts.KeyError
	if err := kh.check(host, remote, probe); !errors.As(err, &listed) {
		return nil, fmt.Errorf("known_hosts lookup for %q: unexpected answer from %s: %v", alias, kh.path, err)
	}
	var keys []ssh.PublicKey
	seen := map[string]bool{}
	onlyRevoked := false
	for _, w := range listed.Want {
		var revoked *knownhosts.RevokedError
		if errors.As(kh.check(host, remote, w.Key), &revoked) {
			onlyRevoked = true
			continue
		}
		if k := string(w.Key.Marshal()); !seen[k] {
			seen[k] = true
			keys = append(keys, w.Key)
		}
	}
	if len(keys) == 0 {
		return nil, &NoHostKeyError{Alias: alias, Revoked: onlyRevoked}
	}
	return keys, nil
}

// ParsePinnedKey parses a single host key in authorized_keys / .pub form,
// "ssh-ed25519 AAAA... [comment]", as an operator would paste it from the
// template's /etc/ssh/ssh_host_ed25519_key.pub. Its errors say what is wrong
// with the line; callers add where it came from and how to get it right.
func ParsePinnedKey(line string) (ssh.PublicKey, error) {
	key, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		// x/crypto's message ("no key found; last parsing error for ignored
		// line: ...") describes its parser, not the operator's mistake.
		return nil, failure.Configf("pinned host key %q is not a public key", abbreviate(line))
	}
	if len(options) > 0 {
		// ParseAuthorizedKey reads a leading known_hosts host list as
		// authorized_keys options; the key would parse, but the line is not
		// what the operator thinks it is.
		return nil, failure.Configf("pinned host key %q has something before the key type (known_hosts lines belong in known_hosts_file)", abbreviate(line))
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, failure.Configf("pinned host key holds more than one key (more follows %s)", describeKey(key))
	}
	return key, nil
}

func abbreviate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// hostKeyAlgorithms turns pins into ClientConfig.HostKeyAlgorithms. Without
// it x/crypto prefers ECDSA and RSA over Ed25519, so a guest holding several
// host keys would present one we did not pin and fail as a "mismatch"
// (golang/go#49631). ssh-rsa keys are named by their SHA-2 signature
// algorithms: the key type "ssh-rsa" as an algorithm means SHA-1 signatures,
// which modern sshd refuses. Certificates are skipped: their algorithm names
// differ from the key's and we do not verify CAs anyway.
func hostKeyAlgorithms(pins []ssh.PublicKey) []string {
	var algos []string
	add := func(names ...string) {
		for _, n := range names {
			if !slices.Contains(algos, n) {
				algos = append(algos, n)
			}
		}
	}
	for _, k := range pins {
		if _, isCert := k.(*ssh.Certificate); isCert {
			continue
		}
		switch t := k.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			add(t)
		}
	}
	return algos
}
