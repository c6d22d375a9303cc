package guestssh

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ErrClosed is returned by Run once the Client has been closed by its owner.
var ErrClosed = errors.New("guestssh: client is closed")

// HostKeyError means the guest is not the machine we pinned. Connect never
// retries it: a wrong key does not heal while the VM boots, and waiting out the
// boot deadline would only hide a possible man-in-the-middle or a template
// whose keys were regenerated (cloud-init's ssh_deletekeys is the usual cause).
type HostKeyError struct {
	Addr  string
	Alias string // known_hosts name of the pinned keys (the template), if known
	// Got is the key the server presented; nil when the server offered no
	// host key algorithm matching the pinned keys, so no key was exchanged.
	Got  ssh.PublicKey
	Want []ssh.PublicKey
	// ServerAlgorithms lists the host key algorithms the server offered when
	// negotiation failed (Got == nil).
	ServerAlgorithms []string
	// Advice replaces the advice on pinning a template's key (Config.HostKeyAdvice).
	Advice string
}

func (e *HostKeyError) Error() string {
	var b strings.Builder
	if e.Got != nil {
		fmt.Fprintf(&b, "ssh host key mismatch for %s: the server presented %s, but the pinned key(s) are %s",
			e.Addr, describeKey(e.Got), describeKeys(e.Want))
	} else {
		fmt.Fprintf(&b, "ssh host key mismatch for %s: the server offers only host key algorithms %s, none of which matches the pinned key(s) %s",
			e.Addr, strings.Join(e.ServerAlgorithms, ","), describeKeys(e.Want))
	}
	if e.Advice != "" {
		b.WriteString("; " + e.Advice)
		return b.String()
	}
	where := "the known_hosts entry"
	if e.Alias != "" {
		where = fmt.Sprintf("the known_hosts entry for %q", e.Alias)
	}
	fmt.Fprintf(&b, "; if the template's host keys changed on purpose, update the pinned key (%s) from the template's /etc/ssh/ssh_host_*_key.pub,"+
		" and keep the keys stable in the template (cloud-init: ssh_deletekeys: false); otherwise treat this as a possible man-in-the-middle", where)
	return b.String()
}

// AuthError means the guest's sshd rejected our credentials after a good
// handshake. Connect gives it only a couple of retries (see Config.AuthRetries)
// because a wrong identity_file does not fix itself.
type AuthError struct {
	Addr string
	User string
	// Offered describes what we tried: "publickey (ssh-ed25519 SHA256:…)",
	// "password". Never contains a secret.
	Offered []string
	// ServerMethods is what the server said it accepts, when it said so.
	ServerMethods []string
	Attempts      int
	Err           error
}

func (e *AuthError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ssh authentication as user %q to %s failed", e.User, e.Addr)
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " %d times", e.Attempts)
	}
	fmt.Fprintf(&b, " (offered: %s", strings.Join(e.Offered, ", "))
	if len(e.ServerMethods) > 0 {
		fmt.Fprintf(&b, "; server accepts: %s", strings.Join(e.ServerMethods, ","))
	}
	b.WriteString("): check that identity_file is the private half of a key listed in the template's")
	fmt.Fprintf(&b, " ~%s/.ssh/authorized_keys and that user %q exists in the template", e.User, e.User)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *AuthError) Unwrap() error { return e.Err }

// LostError means the connection or the session died under a running stage:
// infrastructure trouble, never the job's fault, so it is a system failure.
type LostError struct {
	Addr   string
	Reason string // why, in words: "keepalive missed 3 times (every 15s)", "EOF"
	Err    error
}

func (e *LostError) Error() string {
	return fmt.Sprintf("connection to %s was lost during the stage: %s", e.Addr, e.Reason)
}

func (e *LostError) Unwrap() error { return e.Err }

func describeKey(k ssh.PublicKey) string {
	return k.Type() + " " + ssh.FingerprintSHA256(k)
}

func describeKeys(keys []ssh.PublicKey) string {
	if len(keys) == 0 {
		return "[none]"
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = describeKey(k)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
