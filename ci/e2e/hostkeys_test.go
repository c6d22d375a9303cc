package e2e

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// A template made by `bhyve-executor template build` takes per-VM host
// keys: through upstream's runner loop, natively and through the Custom
// executor, a job on it says in its log which key mode it used, and the
// key the guest holds is the per-VM one, not the template's. (The fallback
// for templates without cloud-init is shown in helpers/jobvm's
// TestE2ETemplateWithoutCloudInitKeepsItsPin.)
func TestPerVMHostKeysThroughTheRunner(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"native", "custom"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			const runner, tmpl = "bhyve-1", "fbsd"
			tb := testbed.New(t, testbed.Options{
				Runners:  []string{runner},
				Settings: []string{`allowed_images = ["fbsd"]`, `snapshot = "latest"`, `ssh.user = "gitlab-runner"`},
			})
			start := time.Now()
			out := tb.TemplateBuild(ctx, t, runner, tmpl)
			t.Logf("template build took %s", time.Since(start).Round(time.Millisecond))
			require.Contains(t, out, "host key of fbsd pinned in")
			pinned := regexp.MustCompile(`host key (SHA256:\S+) \(trusted on first use\)`).FindStringSubmatch(out)
			require.Len(t, pinned, 2, "template build names the template's key:\n%s", out)

			if path == "native" {
				tb.Register(ctx, t, runner, "bhyve")
			} else {
				tb.Register(ctx, t, runner, "custom", tb.CustomArgs(runner)...)
			}
			p := tb.Start(t, "run")

			script := []string{"cat /etc/ssh/ssh_host_ed25519_key.pub | ssh-keygen -lf - | awk '{print \"guest key \" $2}'", "id -un"}
			jobStart := time.Now()
			id := tb.Enqueue(t, gitlab.JobSpec{Name: "per-vm", Project: testbed.Project, Image: tmpl, Script: script})
			rec := tb.Wait(ctx, t, id)
			trace := testbed.Plain(rec.Trace)
			t.Logf("per-VM job %s in %s:\n%s", rec.Status, time.Since(jobStart).Round(time.Millisecond), trace)
			require.Equal(t, "success", rec.Status, "runner log:\n%s", testbed.Plain(p.Log()))
			m := regexp.MustCompile(`Host key: per-VM ssh-ed25519 (SHA256:\S+), delivered in \S+'s own cloud-init data; the job trusts this key only \(host_keys = "auto"\)`).FindStringSubmatch(trace)
			require.Len(t, m, 2, "the job log names the per-VM key")
			assert.Contains(t, trace, "guest key "+m[1], "the guest holds the key the job pinned")
			assert.NotContains(t, trace, pinned[1], "the template's key is not the job VM's")
			assert.NotContains(t, trace, "PRIVATE KEY")

			// The native executor destroys a finished job's VM in the
			// background: wait for it before stopping the runner.
			tb.WaitOnlyTemplates(ctx, t, tb.Host.Template(), tmpl)
			p.Stop()
		})
	}
}
