package gitlab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

func start(t *testing.T, o gitlab.Options) *gitlab.Server {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	o.Logf = t.Logf
	s, err := gitlab.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// response is what a test needs of an answer.
type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, upstream's doJSON requires application/json; body %s", ct, r.Body)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// call sends a request shaped like upstream's network client does: JSON
// body, Accept: application/json, the token header it sets for the
// endpoint, path relative to /api/v4/.
func call(t *testing.T, s *gitlab.Server, method, path string, header http.Header, body any) response {
	t.Helper()
	r, err := send(s, method, path, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is call without the test, for goroutines.
func send(s *gitlab.Server, method, path string, header http.Header, body any) (response, error) {
	return sendWith(http.DefaultClient, s, method, path, header, body)
}

// sendWith sends through c, e.g. one that dials inside a simulated host.
func sendWith(c *http.Client, s *gitlab.Server, method, path string, header http.Header, body any) (response, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "text/plain"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, s.URL()+"/api/v4/"+path, rd)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if ctype != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{Code: res.StatusCode, Header: res.Header, Body: b}, nil
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// info is the runner's "info" object; features as upstream's
// GitLabClient.getFeatures and the shell executor declare them.
func info(graceful bool) map[string]any {
	return map[string]any{
		"name": "gitlab-runner", "version": "18.4.0", "executor": "custom", "shell": "bash",
		"features": map[string]bool{
			"variables": true, "artifacts": true, "masking": true, "refspecs": true,
			"trace_reset": true, "trace_checksum": true, "trace_size": true, "cancelable": true,
			"cancel_gracefully": graceful, "two_phase_job_commit": true, "multi_build_steps": true,
			"return_exit_code": true, "upload_raw_artifacts": true, "raw_variables": true,
		},
	}
}

// payload is the part of the job JSON the tests look at, decoded with the
// json names upstream's spec.Job uses.
type payload struct {
	ID      int64  `json:"id"`
	Token   string `json:"token"`
	JobInfo struct {
		Name            string `json:"name"`
		ProjectFullPath string `json:"project_full_path"`
		PipelineID      int64  `json:"pipeline_id"`
	} `json:"job_info"`
	GitInfo struct {
		RepoURL  string   `json:"repo_url"`
		Ref      string   `json:"ref"`
		Sha      string   `json:"sha"`
		Refspecs []string `json:"refspecs"`
		Depth    int      `json:"depth"`
	} `json:"git_info"`
	RunnerInfo struct {
		Timeout int `json:"timeout"`
	} `json:"runner_info"`
	Variables []gitlab.Variable `json:"variables"`
	Steps     []struct {
		Name         string   `json:"name"`
		Script       []string `json:"script"`
		Timeout      int      `json:"timeout"`
		When         string   `json:"when"`
		AllowFailure bool     `json:"allow_failure"`
	} `json:"steps"`
	Image struct {
		Name string `json:"name"`
	} `json:"image"`
	Artifacts []struct {
		Paths  []string `json:"paths"`
		When   string   `json:"when"`
		Type   string   `json:"artifact_type"`
		Format string   `json:"artifact_format"`
	} `json:"artifacts"`
	Dependencies []struct {
		ID            int64  `json:"id"`
		Token         string `json:"token"`
		Name          string `json:"name"`
		ArtifactsFile struct {
			Filename string `json:"filename"`
			Size     int64  `json:"size"`
		} `json:"artifacts_file"`
	} `json:"dependencies"`
	Features struct {
		FailureReasons []string `json:"failure_reasons"`
	} `json:"features"`
}

func (p payload) variable(key string) (gitlab.Variable, bool) {
	for _, v := range p.Variables {
		if v.Key == key {
			return v, true
		}
	}
	return gitlab.Variable{}, false
}

// requestJob asks for a job with a runner token; it fails the test unless
// the answer is 201.
func requestJob(t *testing.T, s *gitlab.Server, token, systemID string, graceful bool) payload {
	t.Helper()
	r := call(t, s, "POST", "jobs/request", hdr("RUNNER-TOKEN", token),
		map[string]any{"token": token, "system_id": systemID, "info": info(graceful)})
	if r.Code != http.StatusCreated {
		t.Fatalf("jobs/request: %d %s", r.Code, r.Body)
	}
	var p payload
	r.json(t, &p)
	return p
}

func update(t *testing.T, s *gitlab.Server, p payload, state string, extra map[string]any) response {
	t.Helper()
	body := map[string]any{"token": p.Token, "state": state, "info": info(true)}
	for k, v := range extra {
		body[k] = v
	}
	return call(t, s, "PUT", "jobs/"+itoa(p.ID), hdr("JOB-TOKEN", p.Token), body)
}

func patch(t *testing.T, s *gitlab.Server, p payload, start int, data string) response {
	t.Helper()
	h := hdr("JOB-TOKEN", p.Token, "Content-Range", itoa(int64(start))+"-"+itoa(int64(start+len(data)-1)))
	return call(t, s, "PATCH", "jobs/"+itoa(p.ID)+"/trace?debug_trace=false", h, []byte(data))
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
