package testbed

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// TemplateBuild runs `bhyve-executor template build NAME` as an operator
// does on the host, for runner's settings, from a simulated
// BASIC-CLOUDINIT image, with the sandbox gitlab-runner as the host's
// runner binary (copied into the template). It returns the command's
// output; a failure fails the test.
func (tb *Testbed) TemplateBuild(ctx context.Context, t testing.TB, runner, name string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "FreeBSD-14.2-RELEASE-amd64-BASIC-CLOUDINIT.img")
	if err := sim.WriteImage(img); err != nil {
		t.Fatal(err)
	}
	cmd := tb.Host.Command(ctx, tb.ExecutorBin, "--config", tb.SettingsPath, "--runner", runner,
		"template", "build", name, "--image", img, "--runner-binary", tb.RunnerBin)
	cmd.Dir = tb.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatal(fmt.Errorf("bhyve-executor template build %s: %w\n%s", name, err, out))
	}
	return string(out)
}
