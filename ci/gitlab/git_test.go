package gitlab_test

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// git runs the real git client with no user config and no prompts, so a
// refused clone fails instead of asking for a password.
func git(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t, time.Minute), "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ASKPASS=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestGitOverHTTP clones and fetches with the real git client the way
// upstream's get_sources does (repo_url with the job token, then the
// payload's refspecs at its depth), and checks every way in is refused
// without a running job's token.
func TestGitOverHTTP(t *testing.T) {
	s := start(t, gitlab.Options{})
	repo := addRepo(t, s)
	token := s.CreateRunner("r")
	enqueue(t, s, gitlab.JobSpec{Name: "done", Project: repo.Path, Script: []string{"true"}})
	done := requestJob(t, s, token, "s", true)
	update(t, s, done, "running", nil)
	update(t, s, done, "success", nil)
	enqueue(t, s, gitlab.JobSpec{Name: "clone", Project: repo.Path, Script: []string{"true"}})
	p := requestJob(t, s, token, "s", true)
	queued, _ := s.Job(enqueue(t, s, gitlab.JobSpec{Name: "queued", Project: repo.Path, Script: []string{"true"}}))

	withToken := func(tok string) string {
		u, _ := url.Parse(p.GitInfo.RepoURL)
		u.User = url.UserPassword("gitlab-ci-token", tok)
		return u.String()
	}
	noCreds, _ := url.Parse(p.GitInfo.RepoURL)
	noCreds.User = nil

	for _, tc := range []struct {
		name, url, wantErr string
	}{
		// A 401 challenge makes git ask for a username it may not prompt for.
		{"no credentials", noCreds.String(), "could not read Username"},
		{"wrong token", withToken("glcbt-wrong"), "Authentication failed"},
		{"finished job's token", withToken(done.Token), "Authentication failed"},
		{"queued job's token", withToken(queued.Token), "Authentication failed"},
		{"no such project", strings.Replace(p.GitInfo.RepoURL, "group/project", "group/other", 1), "not found"},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			out, err := git(t, t.TempDir(), "clone", tc.url, "src")
			if err == nil || !strings.Contains(out, tc.wantErr) {
				t.Errorf("clone: err %v, output %q; want failure mentioning %q", err, out, tc.wantErr)
			}
		})
	}

	t.Run("clone", func(t *testing.T) {
		dir := t.TempDir()
		if out, err := git(t, dir, "clone", p.GitInfo.RepoURL, "src"); err != nil {
			t.Fatalf("clone: %v\n%s", err, out)
		}
		head, _ := git(t, filepath.Join(dir, "src"), "rev-parse", "HEAD")
		readme, err := os.ReadFile(filepath.Join(dir, "src", "README.md"))
		if strings.TrimSpace(head) != repo.SHA || err != nil || string(readme) != "hello\n" {
			t.Errorf("HEAD %s (want %s), README %q %v", head, repo.SHA, readme, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, "src", "scripts", "build.sh")); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("scripts/build.sh should be executable: %v %v", fi, err)
		}
	})

	t.Run("fetch refspecs at depth", func(t *testing.T) {
		dir := t.TempDir()
		steps := [][]string{
			{"init", "--quiet", dir},
			{"remote", "add", "origin", p.GitInfo.RepoURL},
			append([]string{"fetch", "--depth", itoa(int64(p.GitInfo.Depth)), "origin"}, p.GitInfo.Refspecs...),
			{"checkout", "--quiet", "-f", p.GitInfo.Sha},
		}
		for _, args := range steps {
			if out, err := git(t, dir, args...); err != nil {
				t.Fatalf("git %v: %v\n%s", args, err, out)
			}
		}
		ref, _ := git(t, dir, "rev-parse", "refs/pipelines/"+itoa(p.JobInfo.PipelineID))
		if strings.TrimSpace(ref) != repo.SHA {
			t.Errorf("persistent pipeline ref %q, want %s", ref, repo.SHA)
		}
	})

	t.Run("push refused", func(t *testing.T) {
		dir := t.TempDir()
		if out, err := git(t, dir, "clone", p.GitInfo.RepoURL, "src"); err != nil {
			t.Fatalf("clone: %v\n%s", err, out)
		}
		out, err := git(t, filepath.Join(dir, "src"), "push", "origin", "HEAD:refs/heads/evil")
		if err == nil {
			t.Errorf("push with a job token succeeded:\n%s", out)
		}
	})
}
