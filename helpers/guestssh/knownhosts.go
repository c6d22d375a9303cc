package guestssh

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// LoadKnownHosts reads a known_hosts file and returns the keys filed under
// alias. See ParseKnownHosts.
func LoadKnownHosts(path, alias string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, failure.Configf("known_hosts_file: cannot read %s: %w", path, err)
	}
	keys, err := ParseKnownHosts(data, alias)
	if err != nil {
		return nil, failure.Configf("known_hosts_file %s: %w", path, err)
	}
	return keys, nil
}

// ParseKnownHosts returns the keys of every entry whose host patterns match
// alias.
//
// Clone addresses change with every job, so our known_hosts files file the
// template's keys under a fixed alias, normally the template name, instead of
// an address. Matching follows OpenSSH: comma-separated patterns with '*' and
// '?', '!' negation that vetoes the whole line, hashed "|1|salt|hash" names,
// case-insensitive. A key that appears on any "@revoked" line is dropped even
// when another line pins it, because OpenSSH treats revocation as global.
// "@cert-authority" lines for alias are an error: we pin keys, not CAs, and
// silently ignoring the line would leave the operator guessing why nothing
// matched. A malformed line is an error naming its line number, even if it
// would not have matched, because a typo in the file is worth knowing about.
//
// No matching key is an error: an empty pin list would be useless.
func ParseKnownHosts(data []byte, alias string) ([]ssh.PublicKey, error) {
	if alias == "" {
		return nil, fmt.Errorf("known_hosts lookup needs a host alias (the template name)")
	}
	var (
		keys     []ssh.PublicKey
		revoked  = map[string]bool{}
		nRevoked int
	)
	for i, raw := range bytes.Split(data, []byte("\n")) {
		lineNo := i + 1
		line := strings.TrimSpace(string(bytes.TrimSuffix(raw, []byte("\r"))))
		if line == "" || line[0] == '#' {
			continue
		}
		e, err := parseKnownHostsLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		switch e.marker {
		case "revoked":
			// Revocation applies whatever the host patterns say.
			revoked[string(e.key.Marshal())] = true
			continue
		case "cert-authority":
			if matchHostPatterns(e.hosts, alias) {
				return nil, fmt.Errorf("line %d: @cert-authority entries are not supported; pin the template's host key itself (a line %q)",
					lineNo, alias+" "+e.key.Type()+" AAAA...")
			}
			continue
		case "":
		default:
			return nil, fmt.Errorf("line %d: unknown marker @%s", lineNo, e.marker)
		}
		if matchHostPatterns(e.hosts, alias) {
			keys = append(keys, e.key)
		}
	}
	kept := keys[:0]
	for _, k := range keys {
		if revoked[string(k.Marshal())] {
			nRevoked++
			continue
		}
		kept = append(kept, k)
	}
	if len(kept) == 0 {
		if nRevoked > 0 {
			return nil, fmt.Errorf("every host key for %q is marked @revoked; add the template's current host key", alias)
		}
		return nil, fmt.Errorf("no host key for %q; add a line %q with the template's /etc/ssh/ssh_host_ed25519_key.pub", alias, alias+" ssh-ed25519 AAAA...")
	}
	return kept, nil
}

type knownHostsEntry struct {
	marker string
	hosts  string
	key    ssh.PublicKey
}

// parseKnownHostsLine parses one non-comment line. We do not use
// ssh.ParseKnownHosts: it silently skips a line without whitespace and
// rejects a comment containing more than one word, both legal or worth an
// error in OpenSSH's eyes.
func parseKnownHostsLine(line string) (knownHostsEntry, error) {
	var e knownHostsEntry
	fields := strings.Fields(line)
	if len(fields) > 0 && strings.HasPrefix(fields[0], "@") {
		e.marker = fields[0][1:]
		fields = fields[1:]
	}
	if len(fields) < 3 {
		return e, fmt.Errorf("want \"[@marker] hosts keytype base64-key [comment]\", got %d field(s)", len(fields))
	}
	e.hosts = fields[0]
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

// matchHostPatterns reports whether host matches a comma-separated known_hosts
// pattern list. As in OpenSSH, one matching negated pattern rejects the line
// regardless of positive matches.
func matchHostPatterns(patterns, host string) bool {
	host = strings.ToLower(host)
	matched := false
	for _, p := range strings.Split(patterns, ",") {
		if strings.HasPrefix(p, "|") {
			if matchHashedHost(p, host) {
				matched = true
			}
			continue
		}
		negated := strings.HasPrefix(p, "!")
		if negated {
			p = p[1:]
		}
		if !wildcardMatch(strings.ToLower(p), host) {
			continue
		}
		if negated {
			return false
		}
		matched = true
	}
	return matched
}

// matchHashedHost handles HashKnownHosts entries: "|1|" + base64(salt) + "|" +
// base64(HMAC-SHA1(key=salt, host)). Malformed hashes simply do not match,
// as in OpenSSH.
func matchHashedHost(pattern, host string) bool {
	parts := strings.Split(pattern, "|")
	if len(parts) != 4 || parts[0] != "" || parts[1] != "1" {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	want, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil {
		return false
	}
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(host))
	return hmac.Equal(mac.Sum(nil), want)
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
// template's /etc/ssh/ssh_host_ed25519_key.pub.
func ParsePinnedKey(line string) (ssh.PublicKey, error) {
	key, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, failure.Configf("pinned host key %q is not in \"ssh-ed25519 AAAA...\" form: %w", abbreviate(line), err)
	}
	if len(options) > 0 {
		// ParseAuthorizedKey reads a leading known_hosts host list as
		// authorized_keys options; the key would parse, but the line is not
		// what the operator thinks it is.
		return nil, failure.Configf("pinned host key %q has something before the key type; give just \"ssh-ed25519 AAAA...\" "+
			"(known_hosts lines belong in known_hosts_file)", abbreviate(line))
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, failure.Configf("pinned host key: expected one key, found more after %s", describeKey(key))
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
