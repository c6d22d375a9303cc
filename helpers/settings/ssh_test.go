package settings

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

func TestIdentityFile(t *testing.T) {
	const privErr = `expected an OpenSSH or PEM private key such as ssh-keygen -t ed25519 writes`
	R := `FILE: defaults.ssh.identity_file: `
	cases := []struct {
		name  string
		setup func(t *testing.T, f *fixture) string // returns identity_file value
		want  string
	}{
		{"missing", func(t *testing.T, f *fixture) string { return "nope" },
			R + `open DIR/nope: no such file or directory; expected a readable private key file`},
		{"unreadable (a directory)", func(t *testing.T, f *fixture) string {
			f.write(t, "adir/x", "", 0o600)
			return "adir"
		}, R + `DIR/adir is a directory; expected a readable private key file`},
		{"garbage", func(t *testing.T, f *fixture) string {
			f.write(t, "garbage", "this is not a key\n", 0o600)
			return "garbage"
		}, R + `DIR/garbage is not a private key (ssh: no key found); ` + privErr},
		{"public half", func(t *testing.T, f *fixture) string {
			f.write(t, "id.pub", f.identity.line+"\n", 0o600)
			return "id.pub"
		}, R + `DIR/id.pub is a public key; expected the private key (the file without .pub)`},
		{"passphrase protected", func(t *testing.T, f *fixture) string {
			block, err := ssh.MarshalPrivateKeyWithPassphrase(f.identity.raw, "", []byte("secret"))
			require.NoError(t, err)
			f.write(t, "locked", string(pem.EncodeToMemory(block)), 0o600)
			return "locked"
		}, R + `DIR/locked is protected by a passphrase, which the runner cannot enter; expected a key without passphrase, such as ssh-keygen -t ed25519 -N '' -f bhyve_id_ed25519 makes`},
		{"readable by others", func(t *testing.T, f *fixture) string {
			f.write(t, "open", string(f.identity.private), 0o644)
			return "open"
		}, R + `DIR/open is accessible by other users (mode 0644); expected chmod 600 (or 640 with a group only the runner's user is in)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			file := strings.Replace(minimal, `"id_ed25519"`, fmt.Sprintf("%q", tc.setup(t, f)), 1)
			_, err := Load(f.settings(t, file), "ci-1")
			requireConfigError(t, err, f.expand(tc.want))
		})
	}

	t.Run("group-readable key with an absolute path", func(t *testing.T) {
		f := newFixture(t)
		abs := f.write(t, "keys/id", string(f.identity.private), 0o640)
		s, err := Load(f.settings(t, strings.Replace(minimal, `"id_ed25519"`, fmt.Sprintf("%q", abs), 1)), "ci-1")
		require.NoError(t, err)
		assert.Equal(t, abs, s.SSH.IdentityFile)
	})

	t.Run("not set and no password", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, strings.Replace(minimal, `identity_file = "id_ed25519"`, "", 1)), "ci-1")
		requireConfigError(t, err, f.expand(`FILE: runners."ci-1".ssh.identity_file: not set here or in [defaults], and neither is a password; expected the private key (without passphrase) whose public half is in the template's authorized_keys for user "gitlab-runner"`))
	})

	t.Run("runner unsets it and uses a password file", func(t *testing.T) {
		f := newFixture(t)
		f.write(t, "pw", "hunter2\n", 0o600)
		s, err := Load(f.settings(t, minimal+"ssh.identity_file = \"\"\nssh.password_file = \"pw\"\n"), "ci-1")
		require.NoError(t, err)
		assert.Empty(t, s.SSH.IdentityFile)
		signers, err := s.Signers()
		require.NoError(t, err)
		assert.Empty(t, signers)
		assert.Equal(t, "hunter2", s.SSH.Password.Reveal())
	})
}

// knownHostsFixture writes a known_hosts file exercising every pattern rule
// and returns the keys by name.
func knownHostsFixture(t *testing.T, f *fixture) map[string]keyPair {
	keys := map[string]keyPair{}
	for _, n := range []string{"k1", "k2", "k3", "k4", "k5", "k6", "k7"} {
		keys[n] = newKeyPair(t)
	}
	salt := []byte("0123456789abcdefghij")
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte("netbsd-10"))
	hashed := "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(mac.Sum(nil))

	f.write(t, "known_hosts", strings.Join([]string{
		"# pinned host keys, keyed by template name",
		"",
		"freebsd-14 " + keys["k1"].line,
		"freebsd-1?,!freebsd-13 " + keys["k2"].line,
		"openbsd-* " + keys["k3"].line + " root@openbsd with spaces in the comment",
		hashed + " " + keys["k4"].line,
		"!linux-* " + keys["k5"].line,
		"dragonfly " + keys["k6"].line,
		"@revoked * " + keys["k6"].line,
		"NetBSD-9 " + keys["k7"].line,
		"freebsd-14,freebsd-14 " + keys["k1"].line + "\r",
	}, "\n"), 0o644)
	return keys
}

func TestKnownHostsMatching(t *testing.T) {
	f := newFixture(t)
	keys := knownHostsFixture(t, f)
	s, err := Load(f.settings(t, minimal), "ci-1")
	require.NoError(t, err)

	noEntry := func(tmpl string) string {
		return f.expand(`FILE: defaults.ssh.known_hosts_file: DIR/known_hosts has no host key for template "` + tmpl + `" (host patterns are matched against the template name, not an address); expected a line such as "` + tmpl + ` ssh-ed25519 AAAA..." (ssh-keyscan -t ed25519 ADDRESS of a booted ` + tmpl + ` prints the key)`)
	}
	cases := []struct {
		template string
		want     []string // key names, in file order
		wantErr  string
	}{
		{template: "freebsd-14", want: []string{"k1", "k2"}},       // exact + "?" wildcard, duplicate dropped
		{template: "freebsd-15", want: []string{"k2"}},             // "?" wildcard
		{template: "freebsd-13", wantErr: noEntry("freebsd-13")},   // negated
		{template: "freebsd-140", wantErr: noEntry("freebsd-140")}, // "?" is exactly one character
		{template: "openbsd-7", want: []string{"k3"}},              // "*" wildcard, comment with spaces
		{template: "openbsd-", want: []string{"k3"}},               // "*" matches nothing too
		{template: "netbsd-10", want: []string{"k4"}},              // hashed
		{template: "netbsd-1", wantErr: noEntry("netbsd-1")},       // hashed names are exact
		{template: "linux-1", wantErr: noEntry("linux-1")},         // only negated patterns match nothing
		{template: "freebsd-12", want: []string{"k2"}},             // "?" again
		{template: "netbsd-9", want: []string{"k7"}},               // case-insensitive
		{template: "dragonfly", wantErr: f.expand(`FILE: defaults.ssh.known_hosts_file: DIR/known_hosts has only revoked host keys for template "dragonfly"; expected a current key on a line such as "dragonfly ssh-ed25519 AAAA..."`)},
	}
	for _, tc := range cases {
		t.Run(tc.template, func(t *testing.T) {
			got, err := s.HostKeysFor(tc.template)
			if tc.wantErr != "" {
				requireConfigError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			var want [][]byte
			for _, n := range tc.want {
				want = append(want, keys[n].pub.Marshal())
			}
			var gotBytes [][]byte
			for _, k := range got {
				gotBytes = append(gotBytes, k.Marshal())
			}
			assert.Equal(t, want, gotBytes)
		})
	}
}

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*-14", "freebsd-14", true},
		{"*-14", "freebsd-141", false},
		{"**", "x", true},
		{"f*d*", "freebsd", true},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, globMatch(tc.pattern, tc.name), "%q ~ %q", tc.pattern, tc.name)
	}
}

func TestKnownHostsFileProblems(t *testing.T) {
	k := newKeyPair(t)
	const expect = `expected lines such as "TEMPLATE ssh-ed25519 AAAA..." (see ssh-keyscan, or the template's /etc/ssh/ssh_host_ed25519_key.pub)`
	R := `FILE: defaults.ssh.known_hosts_file: `
	cases := []struct {
		name, content string
		mode          uint32
		want          string
	}{
		{"missing fields", "freebsd-14\n", 0o644, R + `line 1 of DIR/known_hosts: is not HOST-PATTERNS KEY-TYPE BASE64-KEY; ` + expect},
		{"bad base64", "# c\nfreebsd-14 ssh-ed25519 !!!notbase64\n", 0o644, R + `line 2 of DIR/known_hosts: illegal base64 data at input byte 0; ` + expect},
		{"type mismatch", "freebsd-14 ssh-rsa " + strings.Fields(k.line)[1] + "\n", 0o644, R + `line 1 of DIR/known_hosts: ssh: known hosts key type mismatch: human-readable type "ssh-rsa", encoded type "ssh-ed25519"; ` + expect},
		{"cert authority", "@cert-authority *.example ssh-ed25519 " + strings.Fields(k.line)[1] + "\n", 0o644, R + `line 1 of DIR/known_hosts: @cert-authority entries are not supported; pin the host key itself; ` + expect},
		{"unknown marker", "@trusted freebsd-14 " + k.line + "\n", 0o644, R + `line 1 of DIR/known_hosts: unknown marker "@trusted"; ` + expect},
		{"bad hashed name", "|1|x|y " + k.line + "\n", 0o644, R + `line 1 of DIR/known_hosts: host pattern "|1|x|y" is not a hashed name of the form |1|SALT|HASH (bad base64); ` + expect},
		{"empty negation", "freebsd-14,! " + k.line + "\n", 0o644, R + `line 1 of DIR/known_hosts: host pattern "!" is empty; ` + expect},
		{"writable by everyone", "freebsd-14 " + k.line + "\n", 0o666, R + `DIR/known_hosts is writable by every user (mode 0666); expected chmod 644 or stricter`},
		{"no entry for the default template", "freebsd-15 " + k.line + "\n", 0o644, R + `DIR/known_hosts has no host key for template "freebsd-14" (host patterns are matched against the template name, not an address); expected a line such as "freebsd-14 ssh-ed25519 AAAA..." (ssh-keyscan -t ed25519 ADDRESS of a booted freebsd-14 prints the key)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.write(t, "known_hosts", tc.content, fileMode(tc.mode))
			_, err := Load(f.settings(t, minimal), "ci-1")
			requireConfigError(t, err, f.expand(tc.want))
		})
	}
}

func TestHostKeyPinningChoice(t *testing.T) {
	t.Run("known_hosts_file and host_key both set", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, minimal+`ssh.host_key = "`+f.hostKey.line+`"`+"\n"), "ci-1")
		requireConfigError(t, err, f.expand(`FILE: defaults.ssh.known_hosts_file: is set together with runners."ci-1".ssh.host_key; expected exactly one way of pinning host keys (set one to "" to drop an inherited value)`))
	})
	t.Run("runner drops the inherited known_hosts_file", func(t *testing.T) {
		f := newFixture(t)
		s, err := Load(f.settings(t, minimal+"ssh.known_hosts_file = \"\"\nssh.host_key = \""+f.hostKey.line+"\"\n"), "ci-1")
		require.NoError(t, err)
		keys, err := s.HostKeysFor("any-template")
		require.NoError(t, err)
		require.Len(t, keys, 1)
		assert.Equal(t, f.hostKey.pub.Marshal(), keys[0].Marshal())
	})
	t.Run("neither, and no insecure flag: explains how to get the key", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, strings.Replace(minimal, `known_hosts_file = "known_hosts"`, "", 1)), "ci-1")
		requireConfigError(t, err, f.expand(`FILE: runners."ci-1".ssh.known_hosts_file: no host key is pinned (neither known_hosts_file nor host_key is set); expected known_hosts_file = "known_hosts" with a line "freebsd-14 ssh-ed25519 AAAA..." or host_key = "ssh-ed25519 AAAA..."; get the key by booting the template (vm start freebsd-14) and running ssh-keyscan -t ed25519 ADDRESS, or cat /etc/ssh/ssh_host_ed25519_key.pub on its console; insecure_skip_host_key_check = true accepts any key but lets anyone on the VM network impersonate the VM`))
	})
	t.Run("insecure flag set explicitly", func(t *testing.T) {
		f := newFixture(t)
		s, err := Load(f.settings(t, strings.Replace(minimal, `known_hosts_file = "known_hosts"`, "insecure_skip_host_key_check = true", 1)), "ci-1")
		require.NoError(t, err)
		assert.True(t, s.SSH.InsecureSkipHostKeyCheck)
		keys, err := s.HostKeysFor("freebsd-14")
		require.NoError(t, err)
		assert.Empty(t, keys)
	})
	t.Run("insecure flag together with a pin", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, minimal+"ssh.insecure_skip_host_key_check = true\n"), "ci-1")
		requireConfigError(t, err, f.expand(`FILE: runners."ci-1".ssh.insecure_skip_host_key_check: is true while defaults.ssh.known_hosts_file pins a host key; expected either a pinned key or insecure_skip_host_key_check, not both`))
	})
}

func TestPasswordNeverPrinted(t *testing.T) {
	const pw = "hunter2-Sup3rSecret"
	f := newFixture(t)
	path := f.write(t, "bhyve.toml", minimal+"ssh.password = \""+pw+"\"\n", 0o600)
	s, err := Load(path, "ci-1")
	require.NoError(t, err)
	require.Equal(t, pw, s.SSH.Password.Reveal())
	assert.True(t, s.SSH.Password.IsSet())

	var printed []string
	printed = append(printed,
		fmt.Sprintf("%v %+v %#v", s, s, s),
		fmt.Sprintf("%v %+v %#v", *s, *s, *s),
		fmt.Sprintf("%v %+v %#v %s %q %x %X %d", s.SSH, s.SSH, s.SSH, s.SSH.Password, s.SSH.Password, s.SSH.Password, s.SSH.Password, s.SSH.Password),
		s.SSH.Password.String(), s.SSH.Password.GoString(),
	)
	js, err := json.Marshal(s)
	require.NoError(t, err)
	printed = append(printed, string(js))
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("settings", "password", s.SSH.Password, "ssh", s.SSH)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("settings", "password", s.SSH.Password)
	printed = append(printed, logged.String())
	for _, p := range printed {
		assert.NotContains(t, p, pw)
		assert.NotContains(t, p, "hunter2")
	}
	assert.Contains(t, fmt.Sprintf("%+v", s), "Password:[redacted]")
	assert.Contains(t, fmt.Sprintf("%#v", s.SSH), `Password:settings.Secret("[redacted]")`)
	assert.Equal(t, "", fmt.Sprint(Secret("")), "an unset secret prints empty")

	t.Run("not in errors", func(t *testing.T) {
		cases := map[string]string{
			"another key is wrong":          minimal + "ssh.password = \"" + pw + "\"\nboot_timeout = 1\n",
			"password has the wrong type":   minimal + "ssh.password = 4815162342\n",
			"password key misspelt":         minimal + "ssh.pasword = \"" + pw + "\"\n",
			"password in a readable file":   minimal + "ssh.password = \"" + pw + "\"\n",
			"password with a password_file": minimal + "ssh.password = \"" + pw + "\"\nssh.password_file = \"pw\"\n",
		}
		for name, content := range cases {
			t.Run(name, func(t *testing.T) {
				f := newFixture(t)
				f.write(t, "pw", pw+"\n", 0o600)
				mode := fileMode(0o600)
				if name == "password in a readable file" {
					mode = 0o644
				}
				_, err := Load(f.write(t, "bhyve.toml", content, mode), "ci-1")
				require.Error(t, err)
				assert.NotContains(t, err.Error(), pw)
				assert.NotContains(t, err.Error(), "4815162342")
			})
		}
	})
}

func TestPasswordRules(t *testing.T) {
	R := `FILE: runners."ci-1".ssh.`
	cases := []struct {
		name, line string
		mode       uint32
		pwFile     string
		pwMode     uint32
		want       string
	}{
		{"inline in a world-readable file", `ssh.password = "x"`, 0o644, "", 0,
			R + `password: is in a file every user can read (mode 0644); expected chmod 640 or 600 on FILE, or password_file instead`},
		{"inline and password_file", `ssh.password = "x"` + "\nssh.password_file = \"pw\"", 0o600, "secret\n", 0o600,
			R + `password: is set together with runners."ci-1".ssh.password_file; expected only one of them (set one to "" to drop an inherited value)`},
		{"password_file readable by others", `ssh.password_file = "pw"`, 0o644, "secret\n", 0o644,
			R + `password_file: DIR/pw is accessible by other users (mode 0644); expected chmod 600 (or 640 with a group only the runner's user is in)`},
		{"password_file empty", `ssh.password_file = "pw"`, 0o644, "\n", 0o600,
			R + `password_file: DIR/pw is empty; expected the password on its first line`},
		{"password_file missing", `ssh.password_file = "pw"`, 0o644, "", 0,
			R + `password_file: open DIR/pw: no such file or directory; expected a readable password file`},
		{"password wrong type", `ssh.password = 1234`, 0o600, "", 0,
			R + `password: the value is an integer, not a string; expected a string (or password_file)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.pwMode != 0 {
				f.write(t, "pw", tc.pwFile, fileMode(tc.pwMode))
			}
			_, err := Load(f.write(t, "bhyve.toml", minimal+tc.line+"\n", fileMode(tc.mode)), "ci-1")
			requireConfigError(t, err, f.expand(tc.want))
		})
	}

	t.Run("password_file keeps inner whitespace, drops one newline", func(t *testing.T) {
		f := newFixture(t)
		f.write(t, "secrets/pw", " two words \r\n", 0o600)
		s, err := Load(f.settings(t, minimal+"ssh.password_file = \"secrets/pw\"\n"), "ci-1")
		require.NoError(t, err)
		assert.Equal(t, " two words ", s.SSH.Password.Reveal())
		assert.Equal(t, filepath.Join(f.dir, "secrets/pw"), s.SSH.PasswordFile)
	})
}
