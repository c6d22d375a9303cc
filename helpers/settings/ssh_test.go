package settings

import (
	"bytes"
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

// TestHostKeysFor checks what settings adds to guestssh.KnownHosts (whose
// tests cover the pattern rules): keys per template from the file Load read,
// the same from Settings built in code, and errors that name the settings
// file, the key and how to pin a key.
func TestHostKeysFor(t *testing.T) {
	f := newFixture(t)
	k1, k2, k3 := newKeyPair(t), newKeyPair(t), newKeyPair(t)
	f.write(t, "known_hosts", strings.Join([]string{
		"# pinned host keys, keyed by template name",
		"freebsd-14 " + k1.line,
		"freebsd-1?,!freebsd-13 " + k2.line,
		"dragonfly " + k3.line,
		"@revoked * " + k3.line,
	}, "\n"), 0o644)
	loaded, err := Load(f.settings(t, minimal), "ci-1")
	require.NoError(t, err)
	inCode := &Settings{Path: "bhyve.toml", Template: "freebsd-14", SSH: SSH{KnownHostsFile: filepath.Join(f.dir, "known_hosts")}}

	const loadedWhere, inCodeWhere = `FILE: defaults.ssh.known_hosts_file: `, `bhyve.toml: ssh.known_hosts_file: `
	noEntry := func(tmpl string) string {
		return `DIR/known_hosts has no host key for template "` + tmpl + `" (host patterns are matched against the template name, not an address); expected a line such as "` + tmpl + ` ssh-ed25519 AAAA..." (ssh-keyscan -t ed25519 ADDRESS of a booted ` + tmpl + ` prints the key)`
	}
	cases := []struct {
		template string
		want     []keyPair
		wantErr  string // after the settings file and key
	}{
		{template: "freebsd-14", want: []keyPair{k1, k2}},
		{template: "freebsd-15", want: []keyPair{k2}},
		{template: "freebsd-13", wantErr: noEntry("freebsd-13")},
		{template: "dragonfly", wantErr: `DIR/known_hosts has only revoked host keys for template "dragonfly"; expected a current key on a line such as "dragonfly ssh-ed25519 AAAA..."`},
		{template: "", wantErr: `DIR/known_hosts: known_hosts lookup needs a host alias (the template name)`},
	}
	for _, tc := range cases {
		for _, s := range []struct {
			name  string
			s     *Settings
			where string
		}{{"loaded", loaded, loadedWhere}, {"in code", inCode, inCodeWhere}} {
			t.Run(tc.template+"/"+s.name, func(t *testing.T) {
				got, err := s.s.HostKeysFor(tc.template)
				if tc.wantErr != "" {
					requireConfigError(t, err, f.expand(s.where+tc.wantErr))
					return
				}
				require.NoError(t, err)
				var want, gotBytes [][]byte
				for _, k := range tc.want {
					want = append(want, k.pub.Marshal())
				}
				for _, k := range got {
					gotBytes = append(gotBytes, k.Marshal())
				}
				assert.Equal(t, want, gotBytes)
			})
		}
	}

	t.Run("in code, a bad file names the settings file and key", func(t *testing.T) {
		f.write(t, "bad_known_hosts", "freebsd-14 ssh-ed25519\n", 0o644)
		s := &Settings{Path: "bhyve.toml", SSH: SSH{KnownHostsFile: filepath.Join(f.dir, "bad_known_hosts")}}
		_, err := s.HostKeysFor("freebsd-14")
		requireConfigError(t, err, f.expand(inCodeWhere+`DIR/bad_known_hosts: line 1: has 2 field(s), not "[@MARKER] HOST-PATTERNS KEY-TYPE BASE64-KEY [COMMENT]"; `+knownHostsExpect))
	})
}

// TestKnownHostsFileProblems: Load reads and checks the whole file, and
// requires a key for the default template.
func TestKnownHostsFileProblems(t *testing.T) {
	k := newKeyPair(t)
	const expect = `expected lines such as "TEMPLATE ssh-ed25519 AAAA..." (see ssh-keyscan, or the template's /etc/ssh/ssh_host_ed25519_key.pub)`
	R := `FILE: defaults.ssh.known_hosts_file: `
	pinned := "freebsd-14 " + k.line + "\n"
	cases := []struct {
		name, content string
		mode          uint32
		want          string
	}{
		{"missing fields", "freebsd-14\n", 0o644, R + `DIR/known_hosts: line 1: has 1 field(s), not "[@MARKER] HOST-PATTERNS KEY-TYPE BASE64-KEY [COMMENT]"; ` + expect},
		{"bad line for a template not in use", pinned + "# c\nopenbsd-7 ssh-ed25519 !!!notbase64\n", 0o644, R + `DIR/known_hosts: line 3: illegal base64 data at input byte 0; ` + expect},
		{"cert authority for a template not in use", pinned + "@cert-authority *.example " + k.line + "\n", 0o644, R + `DIR/known_hosts: line 2: @cert-authority entries are not supported; pin the host key itself; ` + expect},
		{"writable by everyone", pinned, 0o666, R + `DIR/known_hosts is writable by every user (mode 0666); expected chmod 644 or stricter`},
		{"no entry for the default template", "freebsd-15 " + k.line + "\n", 0o644, R + `DIR/known_hosts has no host key for template "freebsd-14" (host patterns are matched against the template name, not an address); expected a line such as "freebsd-14 ssh-ed25519 AAAA..." (ssh-keyscan -t ed25519 ADDRESS of a booted freebsd-14 prints the key)`},
		{"default template only revoked", pinned + "@revoked openbsd-7 " + k.line + "\n", 0o644, R + `DIR/known_hosts has only revoked host keys for template "freebsd-14"; expected a current key on a line such as "freebsd-14 ssh-ed25519 AAAA..."`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.write(t, "known_hosts", tc.content, fileMode(tc.mode))
			_, err := Load(f.settings(t, minimal), "ci-1")
			requireConfigError(t, err, f.expand(tc.want))
		})
	}

	t.Run("missing file", func(t *testing.T) {
		f := newFixture(t)
		_, err := Load(f.settings(t, strings.Replace(minimal, `"known_hosts"`, `"nope"`, 1)), "ci-1")
		requireConfigError(t, err, f.expand(R+`open DIR/nope: no such file or directory; expected a readable known_hosts file`))
	})
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
