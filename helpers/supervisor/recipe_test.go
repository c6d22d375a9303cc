package supervisor

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
)

func TestRecipeChangesWithWhatAPoolVMEmbodies(t *testing.T) {
	base := func() *settings.Settings {
		s := &settings.Settings{Template: "tmpl", Snapshot: "base", VMDir: "/vm", NamePrefix: "ci-", HostID: "h1"}
		s.SSH.User = "ci"
		s.SSH.Port = 22
		return s
	}
	for _, tc := range []struct {
		name    string
		edit    func(*settings.Settings)
		differs bool
	}{
		{"template", func(s *settings.Settings) { s.Template = "tmpl2" }, true},
		{"snapshot", func(s *settings.Settings) { s.Snapshot = "v2" }, true},
		{"ssh.user", func(s *settings.Settings) { s.SSH.User = "root" }, true},
		{"ssh.port", func(s *settings.Settings) { s.SSH.Port = 2222 }, true},
		{"ssh.known_hosts_file", func(s *settings.Settings) { s.SSH.KnownHostsFile = "/etc/kh" }, true},
		{"vm_dir", func(s *settings.Settings) { s.VMDir = "/other" }, true},
		{"host_id", func(s *settings.Settings) { s.HostID = "h2" }, true},
		{"shell (applied per job)", func(s *settings.Settings) { s.Shell = "sh" }, false},
		{"builds_dir (applied per job)", func(s *settings.Settings) { s.BuildsDir = "/b" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.edit(s)
			assert.Equal(t, tc.differs, recipe(s, s.Snapshot) != recipe(base(), base().Snapshot))
		})
	}
}
