package guestssh

import (
	"bytes"
	"errors"
	"os"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// LoadSigner reads an unencrypted private key (OpenSSH, PKCS#1, PKCS#8 or
// SEC1 PEM) for key authentication. Failures are configuration errors that
// say what is wrong with the file, because the operator is the one who can
// fix identity_file.
func LoadSigner(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, failure.Configf("identity_file: cannot read %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err == nil {
		return signer, nil
	}
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		// The runner has nobody to type a passphrase and no agent.
		return nil, failure.Configf("identity_file %s is passphrase-protected; the runner needs an unencrypted key "+
			"(make a dedicated CI key, or remove the passphrase with: ssh-keygen -p -N '' -f %s)", path, path)
	case looksLikePublicKey(data):
		return nil, failure.Configf("identity_file %s holds a public key; point identity_file at the private key (the file without .pub)", path)
	default:
		return nil, failure.Configf("identity_file %s is not a private key in a supported format "+
			"(OpenSSH, or PEM PKCS#1/PKCS#8/SEC1): %w", path, err)
	}
}

func looksLikePublicKey(data []byte) bool {
	if _, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil {
		return true
	}
	return bytes.HasPrefix(bytes.TrimSpace(data), []byte("---- BEGIN SSH2 PUBLIC KEY"))
}
