package sim_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// hostKeyUserData is a #cloud-config with nuageinit's ssh_keys for a fresh
// ed25519 key, and that key's public half.
func hostKeyUserData(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	indented := "    " + strings.ReplaceAll(strings.TrimSpace(string(pem.EncodeToMemory(block))), "\n", "\n    ")
	return "#cloud-config\nssh_keys:\n  ed25519_private: |\n" + indented + "\n  ed25519_public: " +
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + "\n", sp
}

// A clone whose .cloud-init/ was rewritten and whose seed.iso was removed
// gets a new seed at vm start (1.7) and its nuageinit writes ssh_keys
// before sshd starts, on the first boot only: /etc/rc deletes /firstboot.
func TestNuageinitAppliesSSHKeysOnFirstBootOnly(t *testing.T) {
	h := sim.New(t, sim.Options{})
	ctx := testCtx(t, 3*time.Minute)
	img, pub, _ := imageAndKey(t, h)
	mustVM(t, ctx, h, "create", "-i", img, "-C", "-k", pub, "tmpl-ci")
	addr := bootAndAddr(t, ctx, h, "tmpl-ci")
	_, tmplKey := sshAsWait(t, ctx, h, "tmpl-ci", addr, h.SSHUser(), "su -m root -c 'touch /firstboot'")
	mustVM(t, ctx, h, "stop", "tmpl-ci")
	waitState(t, ctx, h, "tmpl-ci", "Stopped")
	mustVM(t, ctx, h, "snapshot", "tmpl-ci@s1")

	mustVM(t, ctx, h, "clone", "tmpl-ci@s1", "c1")
	dir := filepath.Join(h.VMDir(), "c1")
	if !fileExists(filepath.Join(dir, "seed.iso")) {
		t.Fatal("the clone did not inherit the template's seed.iso")
	}
	reseed := func(userData string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, ".cloud-init", "user-data"), []byte(userData), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "seed.iso")); err != nil {
			t.Fatal(err)
		}
	}
	ud, want := hostKeyUserData(t)
	reseed(ud)
	caddr := bootAndAddr(t, ctx, h, "c1")
	out, got := sshAsWait(t, ctx, h, "c1", caddr, h.SSHUser(), "stat -c %a /etc/ssh/ssh_host_ed25519_key")
	if !bytes.Equal(got.Marshal(), want.Marshal()) {
		t.Fatalf("first boot: clone presents %s, want the seed's %s (template's is %s); console:\n%s",
			ssh.FingerprintSHA256(got), ssh.FingerprintSHA256(want), ssh.FingerprintSHA256(tmplKey), readFile(h.GuestLog("c1")))
	}
	if out != "600\n" {
		t.Errorf("host key mode %q, want 600", out)
	}
	if log := readFile(h.VMLog("c1")); !strings.Contains(log, "created "+dir+"/seed.iso for cloud-init") {
		t.Errorf("vm-bhyve.log does not show the seed being rebuilt:\n%s", log)
	}
	if strings.Contains(readFile(h.GuestLog("c1")), "PRIVATE KEY") {
		t.Error("the private key reached the console log")
	}

	// Second boot: /firstboot is gone, a new seed's keys are not applied.
	mustVM(t, ctx, h, "stop", "c1")
	waitState(t, ctx, h, "c1", "Stopped")
	ud2, other := hostKeyUserData(t)
	reseed(ud2)
	caddr = bootAndAddr(t, ctx, h, "c1")
	_, again := sshAsWait(t, ctx, h, "c1", caddr, h.SSHUser(), "true")
	if !bytes.Equal(again.Marshal(), want.Marshal()) {
		t.Errorf("second boot: clone presents %s, want the first boot's %s (not the new seed's %s)",
			ssh.FingerprintSHA256(again), ssh.FingerprintSHA256(want), ssh.FingerprintSHA256(other))
	}
	mustVM(t, ctx, h, "poweroff", "-f", "c1")
	waitState(t, ctx, h, "c1", "Stopped")
	mustVM(t, ctx, h, "destroy", "-f", "c1")
}
