package gitlab

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Repo is a project's repository as AddRepo created it.
type Repo struct {
	Path          string // project full path, e.g. "group/project"
	DefaultBranch string
	SHA           string // commit at the tip of DefaultBranch
}

type project struct {
	id   int64
	repo Repo
	dir  string // bare repository
}

var projectPathRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$`)

// AddRepo creates a project with a bare repository holding one commit of
// files (path → content) on branch "main", served at URL()/<path>.git to
// clients that authenticate as gitlab-ci-token with a running job's token.
func (s *Server) AddRepo(ctx context.Context, projectPath string, files map[string]string) (Repo, error) {
	if !projectPathRe.MatchString(projectPath) || strings.HasSuffix(projectPath, ".git") {
		return Repo{}, fmt.Errorf("fake gitlab: project path %q: want lower-case namespace/name such as group/project", projectPath)
	}
	if len(files) == 0 {
		return Repo{}, fmt.Errorf("fake gitlab: project %s: give at least one file to commit", projectPath)
	}
	s.mu.Lock()
	_, dup := s.projects[projectPath]
	s.mu.Unlock()
	if dup {
		return Repo{}, fmt.Errorf("fake gitlab: project %s already exists", projectPath)
	}

	bare := filepath.Join(s.dir, "repos", projectPath+".git")
	work, err := os.MkdirTemp(s.dir, "work-")
	if err != nil {
		return Repo{}, fmt.Errorf("fake gitlab: %w", err)
	}
	defer os.RemoveAll(work)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		clean := path.Clean(name)
		if clean != name || strings.HasPrefix(clean, "../") || path.IsAbs(clean) {
			return Repo{}, fmt.Errorf("fake gitlab: project %s: file name %q must be a clean relative path", projectPath, name)
		}
		p := filepath.Join(work, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return Repo{}, fmt.Errorf("fake gitlab: %w", err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(files[name], "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(files[name]), mode); err != nil {
			return Repo{}, fmt.Errorf("fake gitlab: %w", err)
		}
	}

	gitDir := []string{"--git-dir", bare, "--work-tree", work}
	steps := [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=main", bare},
		// Gitaly serves upload-pack with allowAnySHA1InWant, which GitLab's
		// refspec "+<sha>:refs/pipelines/<id>" relies on.
		{"--git-dir", bare, "config", "uploadpack.allowAnySHA1InWant", "true"},
		append(gitDir, "add", "--all"),
		append(gitDir, "commit", "--quiet", "-m", "Initial commit"),
	}
	for _, args := range steps {
		if _, err := runGit(ctx, args...); err != nil {
			return Repo{}, fmt.Errorf("fake gitlab: project %s: %w", projectPath, err)
		}
	}
	sha, err := runGit(ctx, "--git-dir", bare, "rev-parse", "refs/heads/main")
	if err != nil {
		return Repo{}, fmt.Errorf("fake gitlab: project %s: %w", projectPath, err)
	}
	repo := Repo{Path: projectPath, DefaultBranch: "main", SHA: strings.TrimSpace(sha)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.projects[projectPath]; dup {
		return Repo{}, fmt.Errorf("fake gitlab: project %s already exists", projectPath)
	}
	s.projects[projectPath] = &project{id: int64(len(s.projects) + 1), repo: repo, dir: bare}
	return repo, nil
}

// runGit runs git with a fixed identity and no user or system config, so
// the host's settings cannot change what is committed.
func runGit(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Fake GitLab", "GIT_AUTHOR_EMAIL=fake@gitlab.invalid",
		"GIT_COMMITTER_NAME=Fake GitLab", "GIT_COMMITTER_EMAIL=fake@gitlab.invalid",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// updateRef points ref at sha in a project's repository; GitLab keeps
// refs/pipelines/<id> as each pipeline's persistent ref.
func (s *Server) updateRef(p *project, ref, sha string) error {
	_, err := runGit(context.Background(), "--git-dir", p.dir, "update-ref", ref, sha)
	return err
}

// serveGit answers git's smart HTTP protocol for /<project>.git/... with
// git http-backend; it reports false for paths that are not a project's.
func (s *Server) serveGit(w http.ResponseWriter, r *http.Request) bool {
	projectPath, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git/")
	if !ok {
		return false
	}
	switch {
	case rest == "info/refs" && r.URL.Query().Get("service") == "git-upload-pack",
		rest == "git-upload-pack" && r.Method == http.MethodPost:
	case rest == "info/refs" && r.URL.Query().Get("service") == "git-receive-pack",
		rest == "git-receive-pack":
		// A job token may read, never push (GitLab's "CI job token"
		// permissions).
		http.Error(w, "You are not allowed to push code to this project.", http.StatusForbidden)
		return true
	default:
		return false
	}

	// Git asks without credentials first and sends them after a 401 with a
	// Basic challenge, as GitLab (Workhorse) issues for private projects.
	user, pass, hasAuth := r.BasicAuth()
	s.mu.Lock()
	j := s.jobByTokenLocked(pass)
	p := s.projects[projectPath]
	s.mu.Unlock()
	if !hasAuth || user != "gitlab-ci-token" || j == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return true
	}
	if p == nil {
		http.Error(w, "The project you were looking for could not be found.", http.StatusNotFound)
		return true
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		http.Error(w, "git not installed: "+err.Error(), http.StatusInternalServerError)
		return true
	}
	h := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env: []string{
			"GIT_PROJECT_ROOT=" + filepath.Join(s.dir, "repos"),
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"REMOTE_USER=" + user,
		},
	}
	h.ServeHTTP(w, r)
	return true
}
