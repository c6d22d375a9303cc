package supervisor_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/supervisor"
)

// jobLog collects what Prepare hands the native executor's job log.
type jobLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *jobLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *jobLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// The native front-end follows upstream's VM executors as the Custom one does
// (cmd/bhyve-executor's protocol tests): an empty allowed_images ignores
// image: with the same warning in the job log.
func TestPrepareIgnoresImageWithEmptyAllowedImages(t *testing.T) {
	h := fixture.New(t, sim.Options{})
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	var log jobLog
	job, err := p.Prepare(context.Background(), nil, r, supervisor.Request{Job: jobvm.Job{ID: 3}, Image: "node:20"}, log.logf)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, job.Finish(context.Background(), nil)) })
	assert.Equal(t, h.Template(), job.VM.Template)
	assert.Contains(t, log.lines, `WARNING: image "node:20" is ignored: allowed_images is empty, so the job runs in the default template "`+h.Template()+`"`)
}

func TestPrepareRefusesAnImageOutsideAllowedImages(t *testing.T) {
	h := fixture.New(t, sim.Options{}, `allowed_images = ["tmpl2"]`)
	p := newProvider(t, h)
	r := supervisor.Runner{Name: fixture.Runner, SettingsPath: h.SettingsPath}
	var log jobLog
	_, err := p.Prepare(context.Background(), nil, r, supervisor.Request{Job: jobvm.Job{ID: 4}, Image: "node:20"}, log.logf)
	require.Error(t, err)
	assert.Equal(t, failure.Config, failure.KindOf(err), "not retried: %v", err)
	assert.Contains(t, err.Error(), `image "node:20" is not a valid vm-bhyve VM name`)
	assert.Contains(t, err.Error(), `a name matching one of "tmpl2"`)
	assert.NotContains(t, log.String(), "Cloning")
	for _, name := range vmNames(t, h) {
		assert.False(t, strings.HasPrefix(name, "ci-"), "no job VM was created, %s is there", name)
	}
}
