package settings

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
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

// keyPair is a generated ed25519 key in the forms the tests write to files.
type keyPair struct {
	private []byte // OpenSSH PEM, no passphrase
	pub     ssh.PublicKey
	line    string // "ssh-ed25519 AAAA..." without newline
	raw     ed25519.PrivateKey
}

func newKeyPair(t *testing.T) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "test")
	require.NoError(t, err)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	return keyPair{
		private: pem.EncodeToMemory(block),
		pub:     sshPub,
		line:    strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))),
		raw:     priv,
	}
}

// fixture is a directory holding a settings file and the files it refers to:
// id_ed25519 (0600) and known_hosts pinning hostKey for freebsd-14.
type fixture struct {
	dir      string
	identity keyPair
	hostKey  keyPair
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), identity: newKeyPair(t), hostKey: newKeyPair(t)}
	f.write(t, "id_ed25519", string(f.identity.private), 0o600)
	f.write(t, "known_hosts", "freebsd-14 "+f.hostKey.line+"\n", 0o644)
	return f
}

// write creates name in the fixture directory with exactly mode, whatever
// the umask.
func (f *fixture) write(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
	return p
}

// settings writes bhyve.toml (0644) and returns its path.
func (f *fixture) settings(t *testing.T, content string) string {
	t.Helper()
	return f.write(t, "bhyve.toml", content, 0o644)
}

// expand replaces FILE and DIR in an expected message.
func (f *fixture) expand(msg string) string {
	msg = strings.ReplaceAll(msg, "FILE", filepath.Join(f.dir, "bhyve.toml"))
	return strings.ReplaceAll(msg, "DIR", f.dir)
}

// requireConfigError checks that err is a *failure.ConfigError with exactly
// the message want.
func requireConfigError(t *testing.T, err error, want string) {
	t.Helper()
	require.Error(t, err)
	var ce *failure.ConfigError
	require.True(t, errors.As(err, &ce), "want *failure.ConfigError, got %T: %v", err, err)
	assert.Equal(t, failure.Config, failure.KindOf(err))
	assert.Equal(t, want, err.Error())
}

// minimal is the smallest valid file: the runner inherits everything.
const minimal = `
[defaults]
template = "freebsd-14"
[defaults.ssh]
identity_file = "id_ed25519"
known_hosts_file = "known_hosts"

[runners."ci-1"]
`

// minimalHostKey pins with host_key, so tests of other keys do not depend on
// known_hosts matching the template.
func (f *fixture) minimalHostKey() string {
	return `
[defaults]
template = "freebsd-14"
[defaults.ssh]
identity_file = "id_ed25519"
host_key = "` + f.hostKey.line + `"

[runners."ci-1"]
`
}

func fileMode(m uint32) os.FileMode { return os.FileMode(m) }
