package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The gate is only worth something if it fails. These fixtures are type
// errors we must never ship: a call to a function upstream does not have, a
// method whose signature does not match upstream's Executor interface, and an
// error that lives only in a _test.go file.
const badExecutor = `package bad

import (
	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"
)

type executor struct{ executors.AbstractExecutor }

func (e *executor) Run(cmd string) error { return nil }

var _ common.Executor = &executor{}

var _ = executors.NewProviderRegistryFromInit()
`

const badTest = `package bad

import (
	"testing"

	"gitlab.com/gitlab-org/gitlab-runner/common"
)

func TestX(t *testing.T) {
	var reason common.JobFailureReasonThatDoesNotExist
	_ = reason
}
`

// goodExecutor uses the same upstream API correctly; the gate must stay quiet.
const goodExecutor = `package good

import (
	"gitlab.com/gitlab-org/gitlab-runner/common"
	"gitlab.com/gitlab-org/gitlab-runner/executors"
)

type executor struct{ executors.AbstractExecutor }

func (e *executor) Run(cmd common.ExecutorCommand) error {
	return &common.BuildError{Inner: nil, FailureReason: common.ScriptFailure, ExitCode: common.NormalizeExitCode(3)}
}

var _ common.Executor = &executor{}

func Provider() common.ExecutorProvider {
	return executors.DefaultExecutorProvider{
		Creator:          func() common.Executor { return &executor{} },
		FeaturesUpdater:  func(*common.FeaturesInfo) {},
		DefaultShellName: "bash",
	}
}
`

func TestCheckReportsErrorsInOurCodeWithFileAndLine(t *testing.T) {
	dir := fixtureModule(t, map[string]string{
		"bad/bad.go":       badExecutor,
		"bad/bad_test.go":  badTest,
		"good/good.go":     goodExecutor,
		"good/doc_test.go": "package good\n",
	})

	res, err := Check(Options{Dir: dir, GoWork: filepath.Join(dir, "go.work"), Patterns: []string{"./bad", "./good"}})
	require.NoError(t, err)

	type want struct {
		file string
		line int
		msg  string
	}
	wants := []want{
		{"bad/bad.go", 12, "wrong type for method Run"},
		{"bad/bad.go", 14, "undefined: executors.NewProviderRegistryFromInit"},
		{"bad/bad_test.go", 10, "undefined: common.JobFailureReasonThatDoesNotExist"},
	}
	require.Len(t, res.Ours, len(wants), "diagnostics: %v", res.Ours)
	for i, w := range wants {
		got := res.Ours[i]
		assert.Equal(t, filepath.Join(dir, w.file), got.File)
		assert.Equal(t, w.line, got.Line, got.String())
		assert.Contains(t, got.Msg, w.msg)
		assert.True(t, strings.HasPrefix(got.String(), filepath.Join(dir, w.file)+":"), got.String())
	}
	for _, d := range res.Ours {
		assert.NotContains(t, d.File, "/good/", "correct code must not be reported")
	}
	assert.Zero(t, res.Ignored, "the API-shaped stand-ins declare everything upstream uses")
}

// Upstream's own packages may break against a stand-in that lacks
// something (an upstream bump that uses more of a refused module): that is
// counted, not blamed on our code.
func TestCheckCountsButDoesNotReportUpstreamErrors(t *testing.T) {
	dir := fixtureModule(t, map[string]string{"good/good.go": goodExecutor})
	empty := filepath.Join(t.TempDir(), "moa")
	write(t, filepath.Join(empty, "go.mod"), "module gitlab.com/gitlab-org/moa\n\ngo 1.26\n")
	work, err := os.ReadFile(filepath.Join(dir, "go.work"))
	require.NoError(t, err)
	re := regexp.MustCompile(`(?m)^(\s*gitlab\.com/gitlab-org/moa => ).*$`)
	require.True(t, re.Match(work), "the workspace replaces moa")
	write(t, filepath.Join(dir, "go.work"), re.ReplaceAllString(string(work), "${1}"+empty))

	res, err := Check(Options{Dir: dir, GoWork: filepath.Join(dir, "go.work"), Patterns: []string{"./good"}})
	require.NoError(t, err)
	assert.Empty(t, res.Ours, "correct code must not be reported")
	assert.Greater(t, res.Ignored, 0, "upstream's errors against an empty moa are counted")
}

// fixtureModule lays out a throwaway module that requires upstream exactly as
// ours does (same go.mod requirements and go.sum) plus a workspace file with
// our stand-in modules, so the fixture is checked under the same conditions
// as the real packages.
func fixtureModule(t *testing.T, files map[string]string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	dir := t.TempDir()

	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	lines := strings.SplitN(string(gomod), "\n", 2)
	require.True(t, strings.HasPrefix(lines[0], "module "), "go.mod starts with the module line")
	write(t, filepath.Join(dir, "go.mod"), "module example.com/fixture\n"+lines[1])

	gosum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	write(t, filepath.Join(dir, "go.sum"), string(gosum))

	work, err := os.ReadFile(filepath.Join(root, "ci", "go.work"))
	require.NoError(t, err)
	w := strings.Replace(string(work), "use ..", "use .", 1)
	w = strings.ReplaceAll(w, "=> ./standins/", "=> "+filepath.Join(root, "ci", "standins")+"/")
	require.NotEqual(t, string(work), w, "ci/go.work has the expected shape")
	write(t, filepath.Join(dir, "go.work"), w)

	for name, content := range files {
		write(t, filepath.Join(dir, name), content)
	}
	return dir
}

func write(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}
