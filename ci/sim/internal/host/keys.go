package host

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// genKey makes a private key of an OpenSSH key type name (ed25519, ecdsa,
// rsa) and returns it in OpenSSH PEM form with its authorized_keys line.
func genKey(kind, comment string) (priv []byte, pub string, err error) {
	var signer crypto.Signer
	switch kind {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, "", err
		}
		signer = k
	case "ecdsa":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, "", err
		}
		signer = k
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return nil, "", err
		}
		signer = k
	default:
		return nil, "", fmt.Errorf("unknown host key type %q (want ed25519, ecdsa or rsa)", kind)
	}
	block, err := ssh.MarshalPrivateKey(signer, comment)
	if err != nil {
		return nil, "", fmt.Errorf("marshal %s key: %w", kind, err)
	}
	sp, err := ssh.NewPublicKey(signer.Public())
	if err != nil {
		return nil, "", fmt.Errorf("public %s key: %w", kind, err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	if comment != "" {
		line += " " + comment
	}
	return pem.EncodeToMemory(block), line + "\n", nil
}

// ensureUserKey creates the client key the templates authorise.
func ensureUserKey(cfg *simstate.Config) (string, error) {
	if b, err := os.ReadFile(cfg.SSHKey() + ".pub"); err == nil {
		return string(b), nil
	}
	if err := os.MkdirAll(cfg.SSHDir(), 0o700); err != nil {
		return "", fmt.Errorf("ssh directory: %w", err)
	}
	priv, pub, err := genKey("ed25519", "bhyve-sim@"+cfg.HostName)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(cfg.SSHKey(), priv, 0o600); err != nil {
		return "", fmt.Errorf("write ssh key: %w", err)
	}
	if err := os.WriteFile(cfg.SSHKey()+".pub", []byte(pub), 0o644); err != nil {
		return "", fmt.Errorf("write ssh key: %w", err)
	}
	return pub, nil
}

// addressPattern is a known_hosts wildcard matching every address of the
// subnet (octet granularity, so a /20 yields "10.77.*").
func addressPattern(p netip.Prefix) string {
	oct := p.Masked().Addr().As4()
	full := p.Bits() / 8
	var parts []string
	for i := 0; i < full && i < 4; i++ {
		parts = append(parts, fmt.Sprint(oct[i]))
	}
	if full < 4 {
		parts = append(parts, "*")
	}
	return strings.Join(parts, ".")
}

// HostKeyFiles lists a VM's host public keys (inside its disk files).
func HostKeyFiles(cfg *simstate.Config, name string) []string {
	keys, _ := filepath.Glob(filepath.Join(cfg.VMPath(name), "disk0", "etc", "ssh", "ssh_host_*_key.pub"))
	sort.Strings(keys)
	return keys
}

// writeKnownHosts writes one line per template host key: the pattern
// matches any guest address and the template's name as an alias.
func writeKnownHosts(cfg *simstate.Config) error {
	pat := addressPattern(cfg.SubnetPrefix())
	var b strings.Builder
	for _, t := range cfg.Templates {
		for _, f := range HostKeyFiles(cfg, t) {
			raw, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read host key: %w", err)
			}
			fields := strings.Fields(string(raw))
			if len(fields) < 2 {
				continue
			}
			fmt.Fprintf(&b, "%s,%s %s %s\n", pat, t, fields[0], fields[1])
		}
	}
	return simstate.WriteFileAtomic(cfg.KnownHosts(), []byte(b.String()), 0o644)
}
