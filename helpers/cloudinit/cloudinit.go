// Package cloudinit renders the cloud-init data that gives one clone of a
// template its own SSH host key: FreeBSD's nuageinit (libexec/nuageinit,
// nuageinit(7)) reads it from the clone's seed at its first boot and writes
// ssh_keys' <algo>_private and <algo>_public to
// /etc/ssh/ssh_host_<algo>_key[.pub] before rc.d/sshd runs, which then
// generates no key of that type. The key is made on the host, so the
// runner knows it before it first connects.
package cloudinit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// The files of vm-bhyve's per-VM cloud-init directory NAME/.cloud-init/
// (core::create_cloud_init, lib/vm-core), which `vm start` turns into the
// seed (makefs -t cd9660 -o R,L=cidata, vm-bhyve 1.7+).
const (
	MetaData      = "meta-data"
	UserData      = "user-data"
	NetworkConfig = "network-config"
)

// KeyAlgorithm is the only host key type a clone is given and the only one
// its job's connection accepts: the template's other keys (rsa, ecdsa) stay
// in the clone, and are shared by every clone.
const KeyAlgorithm = ssh.KeyAlgoED25519

// HostKey is a fresh host key for one VM. Its String and Format show the
// fingerprint only, so a HostKey in a log line leaks nothing.
type HostKey struct {
	Public     ssh.PublicKey
	privatePEM []byte
}

// NewHostKey generates an ed25519 host key; comment ends up in the guest's
// .pub file (OpenSSH's "root@HOST" convention).
func NewHostKey(comment string) (*HostKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	return &HostKey{Public: sp, privatePEM: pem.EncodeToMemory(block)}, nil
}

// String is the key's type and SHA256 fingerprint.
func (k *HostKey) String() string {
	return k.Public.Type() + " " + ssh.FingerprintSHA256(k.Public)
}

// GoString keeps %#v from printing the private key.
func (k *HostKey) GoString() string { return "cloudinit.HostKey{" + k.String() + "}" }

// AuthorizedKey is the public key as one "ssh-ed25519 AAAA..." line
// without newline or comment, as NAME.conf stores it.
func (k *HostKey) AuthorizedKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.Public)))
}

// ErrNotCloudConfig: the inherited user-data is not a #cloud-config
// document, so nuageinit would not read ssh_keys from it ("#!" user-data
// is run as a script, anything else is ignored).
var ErrNotCloudConfig = errors.New("user-data is not a #cloud-config document")

// Inherited is what the clone's .cloud-init/ held when it was cloned: the
// template's files, nil where there was none.
type Inherited struct {
	UserData      []byte
	NetworkConfig []byte
}

// File is one file of the clone's .cloud-init/.
type File struct {
	Name string
	Data []byte
}

// Render returns the clone's new .cloud-init/ files, meta-data and
// user-data first, then network-config if the template had one:
//   - meta-data: a fresh instance-id and the VM name as local-hostname (the
//     only meta-data key nuageinit reads);
//   - user-data: the inherited #cloud-config with ssh_keys replaced by the
//     VM's key, everything else (users, packages, runcmd...) kept;
//   - network-config: the inherited one with the clone's MAC in the match
//     of its only ethernet; vm-bhyve's `vm create -n` wrote the template's
//     MAC there, which no clone has.
func Render(in Inherited, vm string, mac net.HardwareAddr, key *HostKey) ([]File, error) {
	user, err := userData(in.UserData, key)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	meta, err := yaml.Marshal(map[string]string{"instance-id": "iid-" + vm + "-" + hex.EncodeToString(id), "local-hostname": vm})
	if err != nil {
		return nil, err
	}
	files := []File{{MetaData, meta}, {UserData, user}}
	if in.NetworkConfig != nil {
		nc, err := networkConfig(in.NetworkConfig, mac)
		if err != nil {
			return nil, err
		}
		files = append(files, File{NetworkConfig, nc})
	}
	return files, nil
}

const cloudConfigHeader = "#cloud-config"

// CheckUserData says whether ssh_keys can be added to an inherited
// user-data (nil or empty: a new one is written): an ErrNotCloudConfig
// when nuageinit would not parse it.
func CheckUserData(inherited []byte) error {
	if len(bytes.TrimSpace(inherited)) == 0 {
		return nil
	}
	// nuageinit checks the first line (libexec/nuageinit: "#cloud-config").
	first, _, _ := strings.Cut(string(inherited), "\n")
	if strings.TrimRight(first, " \r") != cloudConfigHeader {
		return fmt.Errorf("%w (it starts with %q)", ErrNotCloudConfig, clip(first))
	}
	return nil
}

func userData(inherited []byte, key *HostKey) ([]byte, error) {
	if err := CheckUserData(inherited); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(inherited)) == 0 {
		inherited = []byte(cloudConfigHeader + "\n")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(inherited, &doc); err != nil {
		return nil, fmt.Errorf("parse inherited user-data: %w", err)
	}
	root, err := topMapping(&doc, "user-data")
	if err != nil {
		return nil, err
	}
	keys := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		scalar("ed25519_private"), {Kind: yaml.ScalarNode, Style: yaml.LiteralStyle, Value: string(key.privatePEM)},
		scalar("ed25519_public"), scalar(key.AuthorizedKey()),
	}}
	setKey(root, "ssh_keys", keys)
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, err
	}
	// The header is a YAML comment, which the encoder keeps only when it
	// heads the first key; say it once, on the first line, whatever it did.
	out = bytes.TrimPrefix(out, []byte(cloudConfigHeader+"\n"))
	return append([]byte(cloudConfigHeader+"\n"), out...), nil
}

func networkConfig(inherited []byte, mac net.HardwareAddr) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(inherited, &doc); err != nil {
		return nil, fmt.Errorf("parse inherited network-config: %w", err)
	}
	root, err := topMapping(&doc, "network-config")
	if err != nil {
		return nil, err
	}
	// v2 either at the top (vm-bhyve's core::compile_network_config) or
	// under "network:".
	if n := get(root, "network"); n != nil && n.Kind == yaml.MappingNode {
		root = n
	}
	eth := get(root, "ethernets")
	if eth == nil || eth.Kind != yaml.MappingNode || len(eth.Content) != 2 {
		return inherited, nil // no single ethernet whose MAC we could own
	}
	match := get(eth.Content[1], "match")
	if match == nil || match.Kind != yaml.MappingNode || get(match, "macaddress") == nil {
		return inherited, nil
	}
	setKey(match, "macaddress", scalar(mac.String()))
	return yaml.Marshal(&doc)
}

func topMapping(doc *yaml.Node, what string) (*yaml.Node, error) {
	if doc.Kind == 0 || len(doc.Content) == 0 {
		doc.Kind = yaml.DocumentNode
		doc.Content = []*yaml.Node{{Kind: yaml.MappingNode}}
	}
	if doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("inherited %s is not a YAML mapping", what)
	}
	return doc.Content[0], nil
}

func get(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func setKey(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, scalar(key), v)
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
