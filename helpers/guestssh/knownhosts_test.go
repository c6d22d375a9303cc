package guestssh

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

func newEd25519Key(t testing.TB) (ssh.Signer, ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	return signer, signer.PublicKey()
}

// authorizedLine renders key as "type base64", the tail of a known_hosts line.
func authorizedLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func hashedHost(t testing.TB, host string) string {
	t.Helper()
	salt := make([]byte, 20)
	_, err := rand.Read(salt)
	require.NoError(t, err)
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(host))
	return "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// readKnownHosts writes data to a file and reads it as ReadKnownHosts does.
func readKnownHosts(t *testing.T, data string) (*KnownHosts, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(path, []byte(data), 0o644))
	return ReadKnownHosts(path)
}

func TestKnownHostsKeysFor(t *testing.T) {
	_, k1 := newEd25519Key(t)
	_, k2 := newEd25519Key(t)
	_, k3 := newEd25519Key(t)
	a1, a2, a3 := authorizedLine(k1), authorizedLine(k2), authorizedLine(k3)
	noKey := func(alias string) error { return &NoHostKeyError{Alias: alias} }
	allRevoked := func(alias string) error { return &NoHostKeyError{Alias: alias, Revoked: true} }

	tests := []struct {
		name    string
		data    string
		alias   string
		want    []ssh.PublicKey
		wantErr error // compared by message; a *NoHostKeyError also by type and fields
	}{
		{name: "exact alias", data: "freebsd-14 " + a1 + "\nother " + a2 + "\n", alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "alias case is ignored", data: "freebsd-14 " + a1, alias: "FREEBSD-14", want: []ssh.PublicKey{k1}},
		{name: "several patterns on a line", data: "a,freebsd-14,b " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "several keys in file order", data: "freebsd-14 " + a2 + "\nfreebsd-14 " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k2, k1}},
		{name: "a key pinned twice is returned once", data: "freebsd-14 " + a1 + "\nfreebsd-1?,freebsd-14 " + a2 + "\nfreebsd-* " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k1, k2}},
		{name: "star wildcard", data: "freebsd-* " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		// x/crypto's matcher, unlike OpenSSH's, wants at least one character
		// for a trailing "*": it fails closed, with a message naming the alias.
		{name: "star needs a character", data: "openbsd-* " + a1, alias: "openbsd-", wantErr: noKey("openbsd-")},
		{name: "question mark wildcard", data: "freebsd-1? " + a1 + "\nfreebsd-? " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "question mark is exactly one character", data: "freebsd-1? " + a1, alias: "freebsd-140", wantErr: noKey("freebsd-140")},
		{name: "negation vetoes the line", data: "freebsd-*,!freebsd-14 " + a1 + "\nfreebsd-* " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "negation alone matches nothing", data: "!freebsd-13 " + a1 + "\nfreebsd-14 " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "hashed entry", data: hashedHost(t, "freebsd-14") + " " + a1 + "\n" + hashedHost(t, "other") + " " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "hashed names have no wildcards", data: hashedHost(t, "freebsd-1*") + " " + a1, alias: "freebsd-14", wantErr: noKey("freebsd-14")},
		{name: "hashed names hash the lower-cased alias", data: hashedHost(t, "netbsd-10") + " " + a1, alias: "NetBSD-10", want: []ssh.PublicKey{k1}},
		{name: "comments blank lines and CRLF", data: "# pinned keys\r\n\r\n   \nfreebsd-14 " + a1 + " root@template built 2026\r\n", alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "revoked key is dropped", data: "freebsd-14 " + a1 + "\nfreebsd-14 " + a2 + "\n@revoked freebsd-14 " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "revocation ignores its host patterns", data: "freebsd-14 " + a1 + "\nfreebsd-14 " + a3 + "\n@revoked other-template " + a3, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "all keys revoked", data: "freebsd-14 " + a1 + "\n@revoked * " + a1, alias: "freebsd-14", wantErr: allRevoked("freebsd-14")},
		{name: "no entry for alias", data: "other " + a1, alias: "freebsd-14", wantErr: noKey("freebsd-14")},
		{name: "empty file", data: "# nothing yet\n", alias: "freebsd-14", wantErr: noKey("freebsd-14")},
		{name: "empty alias", data: "freebsd-14 " + a1, alias: "", wantErr: errors.New("known_hosts lookup needs a host alias (the template name)")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kh, err := readKnownHosts(t, tt.data)
			require.NoError(t, err)
			got, err := kh.KeysFor(tt.alias)
			if tt.wantErr != nil {
				require.EqualError(t, err, tt.wantErr.Error())
				var want *NoHostKeyError
				if errors.As(tt.wantErr, &want) {
					var nk *NoHostKeyError
					require.ErrorAs(t, err, &nk)
					assert.Equal(t, *want, *nk)
				}
				return
			}
			require.NoError(t, err)
			require.Len(t, got, len(tt.want))
			for i := range tt.want {
				assert.Equal(t, tt.want[i].Marshal(), got[i].Marshal(), "key %d", i)
			}
		})
	}
}

// TestParseKnownHostsRejects: every line is checked, whatever alias it
// names, and the error names the line.
func TestParseKnownHostsRejects(t *testing.T) {
	_, k := newEd25519Key(t)
	a := authorizedLine(k)
	blob := strings.Fields(a)[1]
	hashed := hashedHost(t, "freebsd-13")
	tests := []struct{ name, data, want string }{
		{"too few fields, after a comment", "# c\nfreebsd-14 " + a + "\nfreebsd-14 ssh-ed25519\n",
			`line 3: has 2 field(s), not "[@MARKER] HOST-PATTERNS KEY-TYPE BASE64-KEY [COMMENT]"`},
		{"marker alone", "@revoked freebsd-14\n", `line 1: has 1 field(s), not "[@MARKER] HOST-PATTERNS KEY-TYPE BASE64-KEY [COMMENT]"`},
		{"bad base64", "freebsd-14 ssh-ed25519 !!!notbase64", "line 1: illegal base64 data at input byte 0"},
		{"not a key", "# c\nfreebsd-14 ssh-ed25519 AAAA", "line 2: ssh: short read"},
		{"type mismatch on a line for another alias", "other ssh-rsa " + blob, `line 1: key type mismatch: found "ssh-ed25519", want "ssh-rsa"`},
		{"unknown marker", "@bogus freebsd-14 " + a, `line 1: unknown marker "@bogus"`},
		{"markers are case-sensitive", "@Revoked freebsd-14 " + a, `line 1: unknown marker "@Revoked"`},
		{"cert-authority for the alias", "@cert-authority freebsd-* " + a, "line 1: @cert-authority entries are not supported; pin the host key itself"},
		{"cert-authority for another host", "freebsd-14 " + a + "\n@cert-authority other " + a, "line 2: @cert-authority entries are not supported; pin the host key itself"},
		{"hashed name with bad base64", "|1|x|y " + a, `line 1: host pattern "|1|x|y" is not a hashed name of the form |1|SALT|HASH (bad base64)`},
		{"hashed name of another version", "|2|c2FsdA==|aGFzaA== " + a, `line 1: host pattern "|2|c2FsdA==|aGFzaA==" is not a hashed name of the form |1|SALT|HASH`},
		{"hash of the wrong size", "|1|c2FsdA==|aGFzaA== " + a, `line 1: host pattern "|1|c2FsdA==|aGFzaA==" is not a hashed name of the form |1|SALT|HASH (bad base64)`},
		{"empty negation", "freebsd-14,! " + a, `line 1: host pattern "!" is empty`},
		{"empty pattern", "freebsd-14,,other " + a, `line 1: host pattern "" is empty`},
		// What x/crypto's matcher would get wrong, refused instead:
		{"upper case pattern", "FreeBSD-14 " + a, `line 1: host pattern "FreeBSD-14" has upper case letters; template names are lower case, write "freebsd-14"`},
		{"negated hashed name", "*,!" + hashed + " " + a, `line 1: host pattern "!` + hashed + `": a hashed name must be the line's only host pattern, not negated`},
		{"hashed name in a list", "other," + hashed + " " + a, `line 1: host pattern "` + hashed + `": a hashed name must be the line's only host pattern, not negated`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kh, err := readKnownHosts(t, tt.data)
			assert.Nil(t, kh)
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestLoadKnownHosts(t *testing.T) {
	_, k := newEd25519Key(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "known_hosts")
	require.NoError(t, os.WriteFile(path, []byte("tmpl "+authorizedLine(k)+"\n"), 0o600))

	got, err := LoadKnownHosts(path, "tmpl")
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, k.Marshal(), got[0].Marshal())

	t.Run("missing file is a config error", func(t *testing.T) {
		_, err := LoadKnownHosts(filepath.Join(dir, "nope"), "tmpl")
		require.Error(t, err)
		assert.Equal(t, failure.Config, failure.KindOf(err))
		assert.Contains(t, err.Error(), "known_hosts_file")
	})
	t.Run("parse errors name the file", func(t *testing.T) {
		bad := filepath.Join(dir, "bad")
		require.NoError(t, os.WriteFile(bad, []byte("tmpl ssh-ed25519\n"), 0o600))
		_, err := LoadKnownHosts(bad, "tmpl")
		require.Error(t, err)
		assert.Equal(t, failure.Config, failure.KindOf(err))
		assert.Contains(t, err.Error(), bad)
		assert.Contains(t, err.Error(), "line 1")
	})
	t.Run("no key for the alias is a config error", func(t *testing.T) {
		_, err := LoadKnownHosts(path, "other")
		assert.Equal(t, failure.Config, failure.KindOf(err))
		var nk *NoHostKeyError
		require.ErrorAs(t, err, &nk)
		assert.Equal(t, NoHostKeyError{Alias: "other"}, *nk)
		assert.EqualError(t, err, "known_hosts_file "+path+`: no host key for "other"; add a line "other ssh-ed25519 AAAA..." with the template's /etc/ssh/ssh_host_ed25519_key.pub`)
	})
}

func TestParsePinnedKey(t *testing.T) {
	_, k := newEd25519Key(t)

	got, err := ParsePinnedKey(authorizedLine(k) + " root@template\n")
	require.NoError(t, err)
	assert.Equal(t, k.Marshal(), got.Marshal())

	line := authorizedLine(k)
	for name, tc := range map[string]struct{ in, want string }{
		"garbage":      {"not a key", `pinned host key "not a key" is not a public key`},
		"two keys":     {line + "\n" + line, "pinned host key holds more than one key (more follows ssh-ed25519 " + ssh.FingerprintSHA256(k) + ")"},
		"empty":        {"", `pinned host key "" is not a public key`},
		"host prefix":  {"tmpl " + line, `pinned host key "` + abbreviate("tmpl "+line) + `" has something before the key type (known_hosts lines belong in known_hosts_file)`},
		"bad base64":   {"ssh-ed25519 %%%", `pinned host key "ssh-ed25519 %%%" is not a public key`},
		"missing blob": {"ssh-ed25519", `pinned host key "ssh-ed25519" is not a public key`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePinnedKey(tc.in)
			require.EqualError(t, err, tc.want)
			assert.Equal(t, failure.Config, failure.KindOf(err))
		})
	}
}

func TestHostKeyAlgorithms(t *testing.T) {
	_, ed := newEd25519Key(t)
	rsaPub := newRSAKey(t).PublicKey()
	ecPub := newECDSAKey(t).PublicKey()
	cert := &ssh.Certificate{Key: ed, CertType: ssh.HostCert}

	assert.Equal(t, []string{ssh.KeyAlgoED25519}, hostKeyAlgorithms([]ssh.PublicKey{ed}))
	assert.Equal(t, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}, hostKeyAlgorithms([]ssh.PublicKey{rsaPub}),
		"ssh-rsa as an algorithm means SHA-1 signatures, which modern sshd refuses")
	assert.Equal(t, []string{ssh.KeyAlgoECDSA256, ssh.KeyAlgoED25519}, hostKeyAlgorithms([]ssh.PublicKey{ecPub, ed, ed, cert}))
	assert.Empty(t, hostKeyAlgorithms([]ssh.PublicKey{cert}))
}
