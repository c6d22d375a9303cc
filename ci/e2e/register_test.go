package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// register, verify, list and unregister are upstream's commands; what they
// must do with our executor is write `executor = "bhyve"` and never touch
// the sidecar bhyve.toml, which upstream knows nothing about.
func TestRegisterVerifyListUnregister(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb := testbed.New(t, testbed.Options{Runners: []string{"bhyve-1"}})
	settingsBefore, err := os.ReadFile(tb.SettingsPath)
	require.NoError(t, err)

	tb.Register(ctx, t, "bhyve-1", "bhyve", "--limit", "2")
	config, err := os.ReadFile(tb.ConfigPath)
	require.NoError(t, err)
	assert.Contains(t, string(config), `executor = "bhyve"`)
	assert.Contains(t, string(config), `name = "bhyve-1"`)
	assert.Contains(t, string(config), `limit = 2`)
	require.Len(t, tb.GitLab.Runners(), 1, "GitLab knows the runner")

	out, err := tb.Command(ctx, "verify").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "is valid")

	out, err = tb.Command(ctx, "list").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `bhyve-1\s.*Executor=bhyve`, testbed.Plain(string(out)))

	out, err = tb.Command(ctx, "unregister", "--name", "bhyve-1").CombinedOutput()
	require.NoError(t, err, "%s", out)
	config, err = os.ReadFile(tb.ConfigPath)
	require.NoError(t, err)
	assert.NotContains(t, string(config), "bhyve-1", "unregister removes the runner from config.toml")

	settingsAfter, err := os.ReadFile(tb.SettingsPath)
	require.NoError(t, err)
	assert.Equal(t, string(settingsBefore), string(settingsAfter), "bhyve.toml is never touched by upstream's commands")
	assert.Empty(t, strings.TrimSpace(strings.Join(tb.VMs(ctx, t)[1:], " ")), "no VM was made")
}
