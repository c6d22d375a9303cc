package settings

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// knownHost is one entry of known_hosts_file. Host patterns are matched
// against the TEMPLATE NAME, not an address: every clone of a template has the
// template's host keys but a fresh DHCP address, so the name is the only
// stable identity. The SSH client is expected to pin the keys HostKeysFor
// returns for the job's template, whatever address the VM got.
//
// Pattern semantics follow OpenSSH's known_hosts, on names instead of hosts:
//   - patterns are comma-separated; "*" matches any run of characters, "?"
//     exactly one; matching ignores case;
//   - "!pattern" negates: a name matching any negated pattern of an entry is
//     excluded from that entry even if a positive pattern matches, and an
//     entry of only negated patterns matches nothing;
//   - "|1|salt|hash" (ssh-keygen -H) matches the one name whose HMAC-SHA1
//     under salt is hash; hashed patterns have no wildcards;
//   - "@revoked" entries revoke their key for every template;
//   - "@cert-authority" entries are refused: host certificates are not
//     supported, and silently ignoring one would look like pinning.
type knownHost struct {
	line     int
	revoked  bool
	patterns []string
	key      ssh.PublicKey
}

const knownHostsExpect = `expected lines such as "TEMPLATE ssh-ed25519 AAAA..." (see ssh-keyscan, or the template's /etc/ssh/ssh_host_ed25519_key.pub)`

func readKnownHosts(file string) ([]knownHost, error) {
	data, mode, err := readRegular(file)
	if err != nil {
		return nil, fmt.Errorf("%w; expected a readable known_hosts file", err)
	}
	// Readable by all is fine (public keys), writable by all is not: anyone
	// could then pin their own key and impersonate the job VMs.
	if mode&0o002 != 0 {
		return nil, fmt.Errorf("%s is writable by every user (mode %04o); expected chmod 644 or stricter", file, mode.Perm())
	}
	return parseKnownHosts(file, data)
}

func parseKnownHosts(file string, data []byte) ([]knownHost, error) {
	var out []knownHost
	for i, raw := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		line := strings.TrimSpace(strings.TrimSuffix(string(raw), "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d of %s: %s; %s", n, file, fmt.Sprintf(format, args...), knownHostsExpect)
		}
		fields := strings.Fields(line)
		entry := knownHost{line: n}
		switch fields[0] {
		case "@revoked":
			entry.revoked = true
			fields = fields[1:]
		case "@cert-authority":
			return nil, bad("@cert-authority entries are not supported; pin the host key itself")
		default:
			if strings.HasPrefix(fields[0], "@") {
				return nil, bad("unknown marker %s", strconv.Quote(fields[0]))
			}
		}
		if len(fields) < 3 {
			return nil, bad("is not HOST-PATTERNS KEY-TYPE BASE64-KEY")
		}
		// Only the first three fields matter; the comment may contain spaces
		// that ParseKnownHosts would count as fields.
		_, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(strings.Join(fields[:3], " ")))
		if err != nil {
			return nil, bad("%v", err)
		}
		for _, p := range hosts {
			if err := checkHostPattern(p); err != nil {
				return nil, bad("host pattern %s %v", strconv.Quote(p), err)
			}
		}
		entry.patterns, entry.key = hosts, key
		out = append(out, entry)
	}
	return out, nil
}

func checkHostPattern(p string) error {
	switch {
	case strings.TrimPrefix(p, "!") == "":
		return fmt.Errorf("is empty")
	case strings.HasPrefix(p, "|"):
		if _, _, err := decodeHashed(p); err != nil {
			return err
		}
	}
	return nil
}

// decodeHashed splits "|1|salt|hash" as written by ssh-keygen -H.
func decodeHashed(p string) (salt, sum []byte, err error) {
	parts := strings.Split(p, "|")
	if len(parts) != 4 || parts[0] != "" || parts[1] != "1" {
		return nil, nil, fmt.Errorf("is not a hashed name of the form |1|SALT|HASH")
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	sum, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(sum) != sha1.Size {
		return nil, nil, fmt.Errorf("is not a hashed name of the form |1|SALT|HASH (bad base64)")
	}
	return salt, sum, nil
}

// entryMatches applies the pattern rules documented on knownHost.
func entryMatches(patterns []string, name string) bool {
	name = strings.ToLower(name)
	matched := false
	for _, p := range patterns {
		negated := strings.HasPrefix(p, "!")
		if negated {
			p = p[1:]
		}
		if !patternMatches(p, name) {
			continue
		}
		if negated {
			return false
		}
		matched = true
	}
	return matched
}

func patternMatches(p, name string) bool {
	if strings.HasPrefix(p, "|") {
		salt, sum, err := decodeHashed(p)
		if err != nil {
			return false
		}
		mac := hmac.New(sha1.New, salt)
		mac.Write([]byte(name))
		return hmac.Equal(mac.Sum(nil), sum)
	}
	return globMatch(strings.ToLower(p), name)
}

// globMatch matches "*" and "?" with the usual single-backtrack algorithm,
// linear in practice and without recursion on hostile patterns.
func globMatch(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// keysFor returns the keys pinned for template, in file order, without
// duplicates and without revoked keys.
func keysFor(hosts []knownHost, template, file string) ([]ssh.PublicKey, error) {
	revoked := map[string]bool{}
	for _, h := range hosts {
		if h.revoked {
			revoked[string(h.key.Marshal())] = true
		}
	}
	var keys []ssh.PublicKey
	seen := map[string]bool{}
	onlyRevoked := false
	for _, h := range hosts {
		if h.revoked || !entryMatches(h.patterns, template) {
			continue
		}
		k := string(h.key.Marshal())
		if revoked[k] {
			onlyRevoked = true
			continue
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, h.key)
		}
	}
	switch {
	case len(keys) > 0:
		return keys, nil
	case onlyRevoked:
		return nil, fmt.Errorf("%s has only revoked host keys for template %s; expected a current key on a line such as \"%s ssh-ed25519 AAAA...\"", file, strconv.Quote(template), template)
	default:
		return nil, fmt.Errorf("%s has no host key for template %s (host patterns are matched against the template name, not an address); expected a line such as \"%s ssh-ed25519 AAAA...\" (ssh-keyscan -t ed25519 ADDRESS of a booted %s prints the key)", file, strconv.Quote(template), template, template)
	}
}
