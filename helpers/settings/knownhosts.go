package settings

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
)

// known_hosts_file holds the host keys pinned per TEMPLATE NAME, not per
// address: every clone of a template has the template's host keys but a fresh
// DHCP address, so the name is the only stable identity. The format, the
// pattern matching (x/crypto's knownhosts) and the semantic choices (global
// @revoked, @cert-authority refused anywhere, every line checked) are
// guestssh.KnownHosts'; this file
// adds what belongs to the settings: reading the file, its permissions, and
// messages that tell the operator how to pin a key.

const knownHostsExpect = `expected lines such as "TEMPLATE ssh-ed25519 AAAA..." (see ssh-keyscan, or the template's /etc/ssh/ssh_host_ed25519_key.pub)`

// readKnownHosts reads and checks every line of file, so that a typo is a
// Load error and not a surprise in the first job that selects that template.
func readKnownHosts(file string) (*guestssh.KnownHosts, error) {
	_, mode, err := readRegular(file)
	if err != nil {
		return nil, fmt.Errorf("%w; expected a readable known_hosts file", err)
	}
	// Readable by all is fine (public keys), writable by all is not: anyone
	// could then pin their own key and impersonate the job VMs.
	if mode&0o002 != 0 {
		return nil, fmt.Errorf("%s is writable by every user (mode %04o); expected chmod 644 or stricter", file, mode.Perm())
	}
	hosts, err := guestssh.ReadKnownHosts(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; %s", file, err, knownHostsExpect)
	}
	return hosts, nil
}

// keysFor returns the keys file pins for template, with advice on pinning
// one when there is none.
func keysFor(hosts *guestssh.KnownHosts, template, file string) ([]ssh.PublicKey, error) {
	keys, err := hosts.KeysFor(template)
	var none *guestssh.NoHostKeyError
	switch {
	case err == nil:
		return keys, nil
	case errors.As(err, &none) && none.Revoked:
		return nil, fmt.Errorf("%s has only revoked host keys for template %s; expected a current key on a line such as \"%s ssh-ed25519 AAAA...\"", file, strconv.Quote(template), template)
	case errors.As(err, &none):
		return nil, fmt.Errorf("%s has no host key for template %s (host patterns are matched against the template name, not an address); expected a line such as \"%s ssh-ed25519 AAAA...\" (ssh-keyscan -t ed25519 ADDRESS of a booted %s prints the key)", file, strconv.Quote(template), template, template)
	default:
		return nil, fmt.Errorf("%s: %w", file, err)
	}
}
