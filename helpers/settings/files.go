package settings

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
)

// readRegular reads a settings-related file, refusing directories with a
// plain message instead of the read(2) error.
func readRegular(file string) ([]byte, os.FileMode, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if fi.IsDir() {
		return nil, 0, fmt.Errorf("%s is a directory", file)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, 0, err
	}
	return data, fi.Mode(), nil
}

// readProtected reads a file holding a credential and refuses it when other
// users could read or replace it: a CI host is shared, and such a key or
// password would let any local user into every job VM.
func readProtected(file, what string) ([]byte, error) {
	data, mode, err := readRegular(file)
	if err != nil {
		return nil, fmt.Errorf("%w; expected a readable %s", err, what)
	}
	if mode&0o007 != 0 {
		return nil, fmt.Errorf("%s is accessible by other users (mode %04o); expected chmod 600 (or 640 with a group only the runner's user is in)", file, mode.Perm())
	}
	return data, nil
}

func readIdentity(file string) (ssh.Signer, error) {
	data, err := readProtected(file, "private key file")
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err == nil {
		return signer, nil
	}
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("%s is protected by a passphrase, which the runner cannot enter; expected a key without passphrase, such as ssh-keygen -t ed25519 -N '' -f bhyve_id_ed25519 makes", file)
	}
	if _, _, _, _, perr := ssh.ParseAuthorizedKey(data); perr == nil {
		return nil, fmt.Errorf("%s is a public key; expected the private key (the file without .pub)", file)
	}
	return nil, fmt.Errorf("%s is not a private key (%w); expected an OpenSSH or PEM private key such as ssh-keygen -t ed25519 writes", file, err)
}

func readPasswordFile(file string) (Secret, error) {
	data, err := readProtected(file, "password file")
	if err != nil {
		return "", err
	}
	// One trailing newline is what editors and echo add; anything else is
	// part of the password.
	pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("%s is empty; expected the password on its first line", file)
	}
	return Secret(pw), nil
}

const hostKeyExpect = `expected one public key line such as "ssh-ed25519 AAAA...", the contents of the template's /etc/ssh/ssh_host_ed25519_key.pub`

// parseHostKey parses ssh.host_key with guestssh.ParsePinnedKey and adds
// where to find the key.
func parseHostKey(line string) (ssh.PublicKey, error) {
	key, err := guestssh.ParsePinnedKey(line)
	if err != nil {
		return nil, fmt.Errorf("%v; %s", err, hostKeyExpect)
	}
	return key, nil
}
