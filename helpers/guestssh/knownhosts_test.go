package guestssh

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
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

func TestParseKnownHosts(t *testing.T) {
	_, k1 := newEd25519Key(t)
	_, k2 := newEd25519Key(t)
	_, k3 := newEd25519Key(t)
	a1, a2, a3 := authorizedLine(k1), authorizedLine(k2), authorizedLine(k3)

	tests := []struct {
		name    string
		data    string
		alias   string
		want    []ssh.PublicKey
		wantErr string
	}{
		{name: "exact alias", data: "freebsd-14 " + a1 + "\nother " + a2 + "\n", alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "case-insensitive", data: "FreeBSD-14 " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "several patterns on a line", data: "a,freebsd-14,b " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "several keys for the alias", data: "freebsd-14 " + a1 + "\nfreebsd-14 " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k1, k2}},
		{name: "star wildcard", data: "freebsd-* " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "question mark wildcard", data: "freebsd-1? " + a1 + "\nfreebsd-? " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "negation vetoes the line", data: "freebsd-*,!freebsd-14 " + a1 + "\nfreebsd-* " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "negation alone matches nothing", data: "!freebsd-13 " + a1 + "\nfreebsd-14 " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "hashed entry", data: hashedHost(t, "freebsd-14") + " " + a1 + "\n" + hashedHost(t, "other") + " " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "comments blank lines and CRLF", data: "# pinned keys\r\n\r\n   \nfreebsd-14 " + a1 + " root@template built 2026\r\n", alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "revoked key is dropped", data: "freebsd-14 " + a1 + "\nfreebsd-14 " + a2 + "\n@revoked freebsd-14 " + a1, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "revocation is global", data: "freebsd-14 " + a1 + "\nfreebsd-14 " + a3 + "\n@revoked * " + a3, alias: "freebsd-14", want: []ssh.PublicKey{k1}},
		{name: "all keys revoked", data: "freebsd-14 " + a1 + "\n@revoked elsewhere " + a1, alias: "freebsd-14", wantErr: "marked @revoked"},
		{name: "no entry for alias", data: "other " + a1, alias: "freebsd-14", wantErr: `no host key for "freebsd-14"`},
		{name: "cert-authority for alias", data: "@cert-authority freebsd-* " + a1, alias: "freebsd-14", wantErr: "line 1: @cert-authority entries are not supported"},
		{name: "cert-authority for another host is ignored", data: "@cert-authority other " + a1 + "\nfreebsd-14 " + a2, alias: "freebsd-14", want: []ssh.PublicKey{k2}},
		{name: "malformed line names its number", data: "# c\nfreebsd-14 " + a1 + "\nfreebsd-14 ssh-ed25519\n", alias: "freebsd-14", wantErr: "line 3:"},
		{name: "bad base64", data: "freebsd-14 ssh-ed25519 !!!notbase64", alias: "freebsd-14", wantErr: "line 1: key is not valid base64"},
		{name: "type mismatch", data: "freebsd-14 ssh-rsa " + strings.Fields(a1)[1], alias: "freebsd-14", wantErr: "line 1: key type ssh-rsa does not match"},
		{name: "unknown marker", data: "@bogus freebsd-14 " + a1, alias: "freebsd-14", wantErr: "line 1: unknown marker @bogus"},
		{name: "empty alias", data: "freebsd-14 " + a1, alias: "", wantErr: "needs a host alias"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKnownHosts([]byte(tt.data), tt.alias)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
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

func TestWildcardMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbd", false},
		{"*.ci", "t.ci", true},
		{"?", "", false},
		{"??", "ab", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"abc", "abcd", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, wildcardMatch(tt.pattern, tt.s), "%q vs %q", tt.pattern, tt.s)
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
}

func TestParsePinnedKey(t *testing.T) {
	_, k := newEd25519Key(t)

	got, err := ParsePinnedKey(authorizedLine(k) + " root@template\n")
	require.NoError(t, err)
	assert.Equal(t, k.Marshal(), got.Marshal())

	for name, in := range map[string]string{
		"garbage":      "not a key",
		"two keys":     authorizedLine(k) + "\n" + authorizedLine(k),
		"empty":        "",
		"host prefix":  "tmpl " + authorizedLine(k),
		"bad base64":   "ssh-ed25519 %%%",
		"missing blob": "ssh-ed25519",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePinnedKey(in)
			require.Error(t, err)
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
