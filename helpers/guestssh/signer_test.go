package guestssh

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// newRSAKey shares one key per test binary: generating RSA keys is slow
// under -race and nothing depends on its uniqueness.
func newRSAKey(t testing.TB) ssh.Signer {
	t.Helper()
	rsaOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	s, err := ssh.NewSignerFromKey(rsaKey)
	require.NoError(t, err)
	return s
}

func newECDSAKey(t testing.TB) ssh.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	s, err := ssh.NewSignerFromKey(k)
	require.NoError(t, err)
	return s
}

func TestLoadSigner(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}

	plain, err := ssh.MarshalPrivateKey(priv, "ci@host")
	require.NoError(t, err)
	pub, err := ssh.NewPublicKey(priv.Public())
	require.NoError(t, err)

	t.Run("unencrypted OpenSSH key", func(t *testing.T) {
		s, err := LoadSigner(write("id_ed25519", pem.EncodeToMemory(plain)))
		require.NoError(t, err)
		assert.Equal(t, pub.Marshal(), s.PublicKey().Marshal())
	})
	t.Run("PEM RSA key", func(t *testing.T) {
		newRSAKey(t)
		block, err := ssh.MarshalPrivateKey(rsaKey, "")
		require.NoError(t, err)
		_, err = LoadSigner(write("id_rsa", pem.EncodeToMemory(block)))
		require.NoError(t, err)
	})

	tests := []struct {
		name    string
		path    string
		wantErr []string
	}{
		{"missing file", filepath.Join(dir, "absent"), []string{"identity_file", "cannot read"}},
		{"passphrase-protected OpenSSH key", filepath.Join("testdata", "id_ed25519_passphrase"), []string{"passphrase-protected", "ssh-keygen -p"}},
		{"passphrase-protected PEM key", filepath.Join("testdata", "id_rsa_pem_passphrase"), []string{"passphrase-protected", "ssh-keygen -p"}},
		{"public key instead of private", write("id_ed25519.pub", ssh.MarshalAuthorizedKey(pub)), []string{"public key", "without .pub"}},
		{"garbage", write("garbage", []byte("hello\n")), []string{"not a private key in a supported format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadSigner(tt.path)
			require.Error(t, err)
			assert.Equal(t, failure.Config, failure.KindOf(err))
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want)
			}
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
}
