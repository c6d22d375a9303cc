package settings

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSelectTemplate(t *testing.T) {
	f := newFixture(t)
	s, err := Load(f.settings(t, minimal+`allowed_images = ["freebsd-1[45]", "openbsd-.*"]`+"\n"), "ci-1")
	require.NoError(t, err)

	allowed := `expected no image: or image: "freebsd-14" (the default template), or a name matching one of "freebsd-1[45]", "openbsd-.*" (each pattern must match the whole name)`
	invalid := `is not a valid vm-bhyve VM name (lowercase letters, digits, '_' and '-', starting with a letter or digit, no '.', no tag or @snapshot, at most 229 characters); ` + allowed
	R := `FILE: runners."ci-1".allowed_images: image `
	cases := []struct {
		image, want, wantErr string
	}{
		{image: "", want: "freebsd-14"},
		{image: "freebsd-14", want: "freebsd-14"},
		{image: "freebsd-15", want: "freebsd-15"},
		{image: "openbsd-7_6", want: "openbsd-7_6"},
		{image: "freebsd-13", wantErr: R + `"freebsd-13" is not allowed; ` + allowed},
		{image: "freebsd-150", wantErr: R + `"freebsd-150" is not allowed; ` + allowed},   // anchored at the end
		{image: "my-openbsd-7", wantErr: R + `"my-openbsd-7" is not allowed; ` + allowed}, // anchored at the start
		{image: "ci-openbsd-7", wantErr: R + `"ci-openbsd-7" starts with name_prefix "ci-", which marks job VMs, not templates; ` + allowed},
		{image: "../x", wantErr: R + `"../x" ` + invalid},
		{image: "-rf", wantErr: R + `"-rf" ` + invalid},
		{image: "a.b", wantErr: R + `"a.b" ` + invalid},
		{image: "FreeBSD-14", wantErr: R + `"FreeBSD-14" ` + invalid},
		{image: "freebsd-14@base", wantErr: R + `"freebsd-14@base" ` + invalid},
		{image: "freebsd:14", wantErr: R + `"freebsd:14" ` + invalid},
		{image: "openbsd-7 ; rm -rf /", wantErr: R + `"openbsd-7 ; rm -rf /" ` + invalid},
		{image: "openbsd-\x1b[31m", wantErr: R + `"openbsd-\x1b[31m" ` + invalid},
		{image: "openbsd-" + strings.Repeat("a", 292), wantErr: R + `"openbsd-` + strings.Repeat("a", 49) + `..." ` + invalid},
		{image: "openbsd-" + strings.Repeat("a", 221), want: "openbsd-" + strings.Repeat("a", 221)}, // 229 characters
		{image: "openbsd-" + strings.Repeat("a", 222), wantErr: R + `"openbsd-` + strings.Repeat("a", 49) + `..." ` + invalid},
	}
	for _, tc := range cases {
		t.Run(abbreviate(tc.image), func(t *testing.T) {
			got, warning, err := s.SelectTemplate(tc.image)
			if tc.wantErr != "" {
				requireConfigError(t, err, f.expand(tc.wantErr))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Empty(t, warning, "a non-empty allowed_images never ignores image:")
		})
	}

	t.Run("empty allowed_images ignores image: like upstream", func(t *testing.T) {
		f := newFixture(t)
		s, err := Load(f.settings(t, minimal), "ci-1")
		require.NoError(t, err)
		for _, image := range []string{"", "freebsd-14"} {
			got, warning, err := s.SelectTemplate(image)
			require.NoError(t, err)
			assert.Equal(t, "freebsd-14", got)
			assert.Empty(t, warning, "%q is the template: nothing is ignored", image)
		}
		// Upstream ignores any name here; so does this, without ever
		// passing it on. The warning quotes it (no terminal escapes).
		for image, shown := range map[string]string{
			"node:20":                          `"node:20"`,
			"freebsd-15":                       `"freebsd-15"`,
			"ci-1-42-0":                        `"ci-1-42-0"`,
			"x\x1b[31m; rm -rf /":              `"x\x1b[31m; rm -rf /"`,
			"node-" + strings.Repeat("a", 300): `"node-` + strings.Repeat("a", 52) + `..."`,
		} {
			got, warning, err := s.SelectTemplate(image)
			require.NoError(t, err, image)
			assert.Equal(t, "freebsd-14", got, image)
			assert.Equal(t, "WARNING: image "+shown+` is ignored: allowed_images is empty, so the job runs in the default template "freebsd-14"`, warning)
		}
	})
}

func TestAllowedImagesAnchorAlternatives(t *testing.T) {
	f := newFixture(t)
	s, err := Load(f.settings(t, minimal+`allowed_images = ["(?i)FreeBSD-1[45]|openbsd"]`+"\n"), "ci-1")
	require.NoError(t, err)
	for image, ok := range map[string]bool{"freebsd-15": true, "openbsd": true, "xopenbsd": false, "openbsd-7": false, "freebsd-15x": false} {
		_, _, err := s.SelectTemplate(image)
		assert.Equal(t, ok, err == nil, "%s: %v", image, err)
	}
}

func TestSelectTemplateOnSettingsBuiltInCode(t *testing.T) {
	s := &Settings{Path: "bhyve.toml", Template: "freebsd-14", NamePrefix: "ci-", AllowedImages: []string{"freebsd-.*"}}
	got, _, err := s.SelectTemplate("freebsd-15")
	require.NoError(t, err)
	assert.Equal(t, "freebsd-15", got)

	bad := &Settings{Path: "bhyve.toml", Template: "freebsd-14", AllowedImages: []string{"freebsd-(1"}}
	_, _, err = bad.SelectTemplate("freebsd-15")
	requireConfigError(t, err, "bhyve.toml: allowed_images[0]: \"freebsd-(1\" is not a valid regular expression (error parsing regexp: missing closing ): `freebsd-(1`)")

	k := newKeyPair(t)
	pinned := &Settings{Path: "bhyve.toml", SSH: SSH{HostKey: k.line}}
	keys, err := pinned.HostKeysFor("anything")
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assert.Equal(t, k.pub.Marshal(), keys[0].Marshal())

	unpinned := &Settings{Path: "bhyve.toml"}
	_, err = unpinned.HostKeysFor("freebsd-14")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bhyve.toml: ssh.known_hosts_file: no host key is pinned")
}

func TestValidVMName(t *testing.T) {
	for _, ok := range []string{"a", "0", "freebsd-14", "free_bsd", "x-", strings.Repeat("a", 229)} {
		assert.True(t, ValidVMName(ok), ok)
	}
	for _, bad := range []string{"", "-a", "_a", "a.b", "A", "a b", "a/b", "a@b", "a:b", "a\n", strings.Repeat("a", 230), "é"} {
		assert.False(t, ValidVMName(bad), bad)
	}
}

// TestExampleFile loads testdata/bhyve.example.toml, the file the README
// shows, next to the key files it names.
func TestExampleFile(t *testing.T) {
	f := newFixture(t)
	src, err := os.Open(filepath.Join("testdata", "bhyve.example.toml"))
	require.NoError(t, err)
	defer src.Close()
	example, err := io.ReadAll(src)
	require.NoError(t, err)
	path := f.settings(t, string(example))
	f.write(t, "bhyve_id_ed25519", string(f.identity.private), 0o600)
	f.write(t, "bhyve_known_hosts", "freebsd-14,freebsd-14-* "+f.hostKey.line+"\n", 0o644)

	names, err := RunnerNames(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"freebsd-ci", "freebsd-ci-big"}, names)

	s, err := Load(path, "freebsd-ci")
	require.NoError(t, err)
	assert.Equal(t, "freebsd-14", s.Template)
	assert.Equal(t, filepath.Join(f.dir, "bhyve_id_ed25519"), s.SSH.IdentityFile)
	got, _, err := s.SelectTemplate("freebsd-15")
	require.NoError(t, err)
	assert.Equal(t, "freebsd-15", got)
	_, _, err = s.SelectTemplate("freebsd-13")
	require.Error(t, err, "freebsd-ci lists its templates; others are refused")

	big, err := Load(path, "freebsd-ci-big")
	require.NoError(t, err)
	assert.Equal(t, "freebsd-14-big", big.Template)
	assert.Equal(t, 2222, big.SSH.Port)
	assert.Equal(t, "gitlab-runner", big.SSH.User)
	got, warning, err := big.SelectTemplate("freebsd-15")
	require.NoError(t, err)
	assert.Equal(t, "freebsd-14-big", got, "allowed_images = []: image: is ignored")
	assert.NotEmpty(t, warning)
	keys, err := big.HostKeysFor(big.Template)
	require.NoError(t, err)
	assert.Len(t, keys, 1)

	_, err = Load(path, "")
	require.Error(t, err, "two runner sections need a name")
}

// TestDocumentationCoversEveryKey keeps REFERENCE.md and the example in step
// with the keys Load accepts and the built-in defaults it applies.
func TestDocumentationCoversEveryKey(t *testing.T) {
	ref, err := os.ReadFile("REFERENCE.md")
	require.NoError(t, err)
	example, err := os.ReadFile(filepath.Join("testdata", "bhyve.example.toml"))
	require.NoError(t, err)

	keys := sectionKeys()
	require.Len(t, keys, 28+9+4)
	for _, key := range keys {
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(key) + "` \\| ([^|]+) \\|")
		m := row.FindSubmatch(ref)
		if !assert.NotNil(t, m, "REFERENCE.md has no row for %s", key) {
			continue
		}
		if def, ok := builtin[key]; ok {
			assert.Equal(t, "`"+render(def)+"`", strings.TrimSpace(string(m[1])), "REFERENCE.md default of %s", key)
		}
		leaf := key[strings.LastIndex(key, ".")+1:]
		assert.Regexp(t, regexp.MustCompile(`(?m)^#? ?`+regexp.QuoteMeta(leaf)+` = `), string(example), "example mentions %s", key)
	}
	for key := range builtin {
		assert.Contains(t, keys, key, "built-in default for a key the file cannot set")
	}
}
