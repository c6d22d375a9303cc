package guestssh

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// KnownHosts is a parsed known_hosts file. It is the one known_hosts parser
// and matcher of the project: helpers/settings validates known_hosts_file with
// it at load time and serves HostKeysFor from it.
//
// Clone addresses change with every job, so our known_hosts files file a
// template's keys under a fixed alias, normally the template name, instead of
// an address. Host patterns follow OpenSSH, matched against the alias:
//   - patterns are comma-separated; "*" matches any run of characters, "?"
//     exactly one; matching ignores case (OpenSSH lower-cases both sides);
//   - "!pattern" negates: an alias matching any negated pattern of a line is
//     excluded from that line even if a positive pattern matches, and a line
//     of only negated patterns matches nothing;
//   - "|1|salt|hash" (ssh-keygen -H) matches the one alias whose lower-cased
//     HMAC-SHA1 under salt is hash; hashed patterns have no wildcards.
//
// Where we depart from OpenSSH, we do so to fail closed and loudly:
//   - A key on any "@revoked" line is revoked for every alias, whatever that
//     line's host patterns say. OpenSSH only applies a @revoked line to the
//     hosts it matches; a key known to be compromised must not stay usable
//     for another template because its pattern was narrower.
//   - "@cert-authority" lines are an error anywhere in the file, not only
//     when they match the alias being looked up: we pin keys and do not verify
//     host certificates, and a CA line we skipped would look like a pin for a
//     template that a later job may select.
//   - Every line must parse, including lines that match no alias in use, and
//     a hashed or empty host pattern that could never match is an error
//     (OpenSSH skips such lines): a typo in the file is worth knowing about
//     before a job depends on it.
//
// A KnownHosts is immutable once parsed and safe for concurrent use.
type KnownHosts struct {
	entries []knownHostsEntry
}

type knownHostsEntry struct {
	revoked  bool
	patterns []hostPattern
	key      ssh.PublicKey
}

// hostPattern is one comma-separated element of a line's host field.
type hostPattern struct {
	negated bool
	glob    string // lower-cased wildcard pattern; unused when hashed
	hashed  bool
	salt    []byte
	sum     []byte // HMAC-SHA1(key=salt, alias)
}

// ParseKnownHosts parses and checks every line of a known_hosts file. Blank
// lines and lines starting with '#' are skipped; a malformed line is an error
// naming its line number ("line 3: ..."), even if it would match no alias.
func ParseKnownHosts(data []byte) (*KnownHosts, error) {
	kh := &KnownHosts{}
	for i, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSpace(string(bytes.TrimSuffix(raw, []byte("\r"))))
		if line == "" || line[0] == '#' {
			continue
		}
		e, err := parseKnownHostsLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		kh.entries = append(kh.entries, e)
	}
	return kh, nil
}

// LoadKnownHosts reads a known_hosts file and returns the keys filed under
// alias. See KnownHosts and KnownHosts.KeysFor.
func LoadKnownHosts(path, alias string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, failure.Configf("known_hosts_file: cannot read %s: %w", path, err)
	}
	kh, err := ParseKnownHosts(data)
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

// KeysFor returns the keys of the lines whose host patterns match alias, in
// file order, each key once, without revoked keys. No such key is a
// *NoHostKeyError: an empty pin list would be useless.
func (kh *KnownHosts) KeysFor(alias string) ([]ssh.PublicKey, error) {
	if alias == "" {
		return nil, fmt.Errorf("known_hosts lookup needs a host alias (the template name)")
	}
	revoked := map[string]bool{}
	for _, e := range kh.entries {
		if e.revoked {
			revoked[string(e.key.Marshal())] = true
		}
	}
	var keys []ssh.PublicKey
	seen := map[string]bool{}
	onlyRevoked := false
	for _, e := range kh.entries {
		if e.revoked || !matchHostPatterns(e.patterns, alias) {
			continue
		}
		k := string(e.key.Marshal())
		if revoked[k] {
			onlyRevoked = true
			continue
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, e.key)
		}
	}
	if len(keys) == 0 {
		return nil, &NoHostKeyError{Alias: alias, Revoked: onlyRevoked}
	}
	return keys, nil
}

// parseKnownHostsLine parses one non-comment line. We do not use
// ssh.ParseKnownHosts: it silently skips a line without whitespace and
// rejects a comment containing more than one word, both legal or worth an
// error in OpenSSH's eyes.
func parseKnownHostsLine(line string) (knownHostsEntry, error) {
	var e knownHostsEntry
	fields := strings.Fields(line)
	if strings.HasPrefix(fields[0], "@") {
		// OpenSSH's markers are case-sensitive.
		switch fields[0] {
		case "@revoked":
			e.revoked = true
		case "@cert-authority":
			return e, fmt.Errorf("@cert-authority entries are not supported; pin the host key itself")
		default:
			return e, fmt.Errorf("unknown marker %s", strconv.Quote(fields[0]))
		}
		fields = fields[1:]
	}
	if len(fields) < 3 {
		return e, fmt.Errorf("has %d field(s), not \"[@MARKER] HOST-PATTERNS KEY-TYPE BASE64-KEY [COMMENT]\"", len(fields))
	}
	for _, p := range strings.Split(fields[0], ",") {
		hp, err := parseHostPattern(p)
		if err != nil {
			return e, fmt.Errorf("host pattern %s %w", strconv.Quote(p), err)
		}
		e.patterns = append(e.patterns, hp)
	}
	blob, err := base64.StdEncoding.DecodeString(fields[2])
	if err != nil {
		return e, fmt.Errorf("key is not valid base64: %w", err)
	}
	e.key, err = ssh.ParsePublicKey(blob)
	if err != nil {
		return e, fmt.Errorf("cannot parse %s key: %w", fields[1], err)
	}
	if e.key.Type() != fields[1] {
		return e, fmt.Errorf("key type %s does not match the encoded %s key", fields[1], e.key.Type())
	}
	return e, nil
}

func parseHostPattern(p string) (hostPattern, error) {
	var hp hostPattern
	hp.negated = strings.HasPrefix(p, "!")
	p = strings.TrimPrefix(p, "!")
	switch {
	case p == "":
		return hp, fmt.Errorf("is empty")
	case strings.HasPrefix(p, "|"):
		// "|1|" + base64(salt) + "|" + base64(HMAC-SHA1(key=salt, host)).
		parts := strings.Split(p, "|")
		if len(parts) != 4 || parts[0] != "" || parts[1] != "1" {
			return hp, fmt.Errorf("is not a hashed name of the form |1|SALT|HASH")
		}
		salt, err1 := base64.StdEncoding.DecodeString(parts[2])
		sum, err2 := base64.StdEncoding.DecodeString(parts[3])
		if err1 != nil || err2 != nil || len(sum) != sha1.Size {
			return hp, fmt.Errorf("is not a hashed name of the form |1|SALT|HASH (bad base64)")
		}
		hp.hashed, hp.salt, hp.sum = true, salt, sum
	default:
		hp.glob = strings.ToLower(p)
	}
	return hp, nil
}

// matchHostPatterns reports whether host matches a line's pattern list. As in
// OpenSSH, one matching negated pattern rejects the line regardless of
// positive matches.
func matchHostPatterns(patterns []hostPattern, host string) bool {
	host = strings.ToLower(host)
	matched := false
	for _, p := range patterns {
		if !p.matches(host) {
			continue
		}
		if p.negated {
			return false
		}
		matched = true
	}
	return matched
}

// matches reports whether the lower-cased host matches p, ignoring negation.
func (p hostPattern) matches(host string) bool {
	if p.hashed {
		mac := hmac.New(sha1.New, p.salt)
		mac.Write([]byte(host))
		return hmac.Equal(mac.Sum(nil), p.sum)
	}
	return wildcardMatch(p.glob, host)
}

// wildcardMatch is OpenSSH's match_pattern: '*' matches any run, '?' one byte.
func wildcardMatch(pattern, s string) bool {
	// Iterative matcher with a single backtrack point for the last '*',
	// linear in practice for host-name sized inputs.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
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
