package gitlab_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// One GitLab reached on two addresses (runners on two hosts, each through
// its own network) has one queue: a job queued once is handed out once, to
// whichever runner asks, with URLs naming the address that runner reached.
// Close closes every listener.
func TestAddListenerServesOneQueue(t *testing.T) {
	s, err := gitlab.Start(gitlab.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.AddListener(ln)
	if err != nil {
		t.Fatal(err)
	}
	if second == s.URL() || second != "http://"+ln.Addr().String() {
		t.Fatalf("AddListener URL %q (first listener %q), want http://%s", second, s.URL(), ln.Addr())
	}
	repo := addRepo(t, s)
	token := s.CreateRunner("two-homed")
	id := enqueue(t, s, gitlab.JobSpec{Name: "once", Project: repo.Path, Script: []string{"true"}})

	request := func(base string) (int, payload) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"token": token, "system_id": "s_" + strings.TrimPrefix(base, "http://"), "info": info(true)})
		req, err := http.NewRequest("POST", base+"/api/v4/jobs/request", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("RUNNER-TOKEN", token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("jobs/request at %s: %v", base, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var p payload
		if res.StatusCode == http.StatusCreated {
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
		}
		return res.StatusCode, p
	}

	code, p := request(second)
	if code != http.StatusCreated || p.ID != id {
		t.Fatalf("jobs/request at the added listener: %d, job %d; want 201 with job %d", code, p.ID, id)
	}
	if want := second + "/" + repo.Path + ".git"; !strings.HasSuffix(p.GitInfo.RepoURL, strings.TrimPrefix(want, "http://")) {
		t.Errorf("repo_url %q names another address than the one reached (%s)", p.GitInfo.RepoURL, want)
	}
	if v, _ := p.variable("CI_SERVER_URL"); v.Value != second {
		t.Errorf("CI_SERVER_URL %q, want %q", v.Value, second)
	}
	if code, _ := request(s.URL()); code != http.StatusNoContent {
		t.Errorf("jobs/request at the first listener after the job was taken: %d, want 204 (one queue)", code)
	}
	if rec, _ := s.Job(id); rec.SystemID != "s_"+ln.Addr().String() {
		t.Errorf("job taken by %q, want the manager that asked at the added listener", rec.SystemID)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Errorf("the added listener %s still accepts after Close", ln.Addr())
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := s.AddListener(other); err == nil {
		t.Error("AddListener after Close succeeded; want an error")
	}
}
