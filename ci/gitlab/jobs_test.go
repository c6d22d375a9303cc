package gitlab_test

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

func addRepo(t *testing.T, s *gitlab.Server) gitlab.Repo {
	t.Helper()
	repo, err := s.AddRepo(testCtx(t, 30*time.Second), "group/project", map[string]string{
		"README.md": "hello\n", "scripts/build.sh": "#!/bin/sh\necho built\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

func enqueue(t *testing.T, s *gitlab.Server, spec gitlab.JobSpec) int64 {
	t.Helper()
	id, err := s.Enqueue(spec)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestJobPayload checks the job JSON against what upstream reads from it
// (common/spec): git_info with the job token in repo_url, steps,
// runner_info.timeout, masked and public variables, failure reasons.
func TestJobPayload(t *testing.T) {
	s := start(t, gitlab.Options{})
	repo := addRepo(t, s)
	token := s.CreateRunner("r")

	if r := call(t, s, "POST", "jobs/request", nil, map[string]any{"token": token, "info": info(true)}); r.Code != http.StatusNoContent || r.Header.Get("X-GitLab-Last-Update") == "" {
		t.Fatalf("empty queue: %d, X-GitLab-Last-Update %q; want 204 with the header", r.Code, r.Header.Get("X-GitLab-Last-Update"))
	}
	id := enqueue(t, s, gitlab.JobSpec{
		Name: "build", Project: repo.Path, Script: []string{"echo hi", "make"}, AfterScript: []string{"echo bye"},
		Variables: []gitlab.Variable{gitlab.Var("GREETING", "hi"), gitlab.MaskedVar("SECRET", "s3cr3t-value")},
		Image:     "freebsd-14", Timeout: 10 * time.Minute,
		Artifacts: &gitlab.Artifacts{Paths: []string{"out/"}, When: "always"},
	})
	p := requestJob(t, s, token, "s_1", true)

	if p.ID != id || !strings.HasPrefix(p.Token, "glcbt-") || p.JobInfo.Name != "build" || p.JobInfo.ProjectFullPath != repo.Path {
		t.Errorf("id %d token %q job_info %+v", p.ID, p.Token, p.JobInfo)
	}
	u, err := url.Parse(p.GitInfo.RepoURL)
	if err != nil {
		t.Fatal(err)
	}
	if pw, _ := u.User.Password(); u.User.Username() != "gitlab-ci-token" || pw != p.Token || u.Path != "/group/project.git" ||
		"http://"+u.Host != s.URL() {
		t.Errorf("repo_url %s: want http://gitlab-ci-token:<job token>@%s/group/project.git", p.GitInfo.RepoURL, s.URL())
	}
	wantRefspecs := []string{"+" + repo.SHA + ":refs/pipelines/" + itoa(p.JobInfo.PipelineID), "+refs/heads/main:refs/remotes/origin/main"}
	if p.GitInfo.Sha != repo.SHA || p.GitInfo.Ref != "main" || p.GitInfo.Depth != 20 || fmt.Sprint(p.GitInfo.Refspecs) != fmt.Sprint(wantRefspecs) {
		t.Errorf("git_info %+v, want sha %s ref main depth 20 refspecs %v", p.GitInfo, repo.SHA, wantRefspecs)
	}
	if p.RunnerInfo.Timeout != 600 {
		t.Errorf("runner_info.timeout %d, want 600", p.RunnerInfo.Timeout)
	}
	if len(p.Steps) != 2 || p.Steps[0].Name != "script" || fmt.Sprint(p.Steps[0].Script) != "[echo hi make]" || p.Steps[0].When != "on_success" ||
		p.Steps[1].Name != "after_script" || p.Steps[1].When != "always" || !p.Steps[1].AllowFailure || p.Steps[0].Timeout != 600 {
		t.Errorf("steps %+v", p.Steps)
	}
	if p.Image.Name != "freebsd-14" || len(p.Artifacts) != 1 || p.Artifacts[0].When != "always" || p.Artifacts[0].Type != "archive" || p.Artifacts[0].Format != "zip" {
		t.Errorf("image %+v artifacts %+v", p.Image, p.Artifacts)
	}
	for _, tc := range []struct {
		key, value     string
		public, masked bool
	}{
		{"CI_JOB_ID", itoa(id), true, false},
		{"CI_JOB_TOKEN", p.Token, false, true},
		{"CI_SERVER_URL", s.URL(), true, false},
		{"CI_REPOSITORY_URL", p.GitInfo.RepoURL, false, false},
		{"CI_COMMIT_SHA", repo.SHA, true, false},
		{"CI_PROJECT_PATH", "group/project", true, false},
		{"CI_RUNNER_ID", itoa(s.Runners()[0].ID), true, false},
		{"GREETING", "hi", true, false},
		{"SECRET", "s3cr3t-value", false, true},
	} {
		v, ok := p.variable(tc.key)
		if !ok || v.Value != tc.value || v.Public != tc.public || v.Masked != tc.masked {
			t.Errorf("variable %s = %+v (found %v), want value %q public %v masked %v", tc.key, v, ok, tc.value, tc.public, tc.masked)
		}
	}
	if _, ok := p.variable("CI_PROJECT_DIR"); ok {
		t.Error("CI_PROJECT_DIR is the runner's to set, GitLab does not send it")
	}
	reasons := strings.Join(p.Features.FailureReasons, ",")
	for _, want := range []string{"script_failure", "runner_system_failure", "job_execution_timeout"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("failure_reasons %s lack %s", reasons, want)
		}
	}
	if rec, _ := s.Job(id); rec.Status != gitlab.StatusPending || rec.ReceivedAt.IsZero() || rec.SystemID != "s_1" {
		t.Errorf("after a two-phase runner took it: %+v", rec)
	}
}

// TestJobLifecycle drives a job as upstream's trace and UpdateJob do:
// two-phase commit, trace patches (including a range mismatch), final
// update with the trace checksum, then refusal once finished.
func TestJobLifecycle(t *testing.T) {
	s := start(t, gitlab.Options{FinalUpdateAccepts: 1})
	repo := addRepo(t, s)
	token := s.CreateRunner("r")
	id := enqueue(t, s, gitlab.JobSpec{Name: "test", Project: repo.Path, Script: []string{"true"}})
	p := requestJob(t, s, token, "s_1", true)

	r := update(t, s, p, "running", nil)
	if r.Code != http.StatusOK || r.Header.Get("Job-Status") != "running" {
		t.Fatalf("PUT running: %d Job-Status %q", r.Code, r.Header.Get("Job-Status"))
	}
	if rec, _ := s.Job(id); rec.Status != gitlab.StatusRunning || rec.AcceptedAt.IsZero() {
		t.Fatalf("after two-phase commit: %+v", rec)
	}

	trace := ""
	for _, tc := range []struct {
		name      string
		start     int
		data      string
		want      int
		wantRange string
	}{
		{"first bytes", 0, "Running with gitlab-runner\n", http.StatusAccepted, "0-27"},
		{"next bytes", 27, "$ true\n", http.StatusAccepted, "0-34"},
		{"resent old range", 0, "Running", http.StatusRequestedRangeNotSatisfiable, "0-34"},
		{"gap", 40, "x", http.StatusRequestedRangeNotSatisfiable, "0-34"},
		{"last bytes", 34, "Job succeeded\n", http.StatusAccepted, "0-48"},
	} {
		t.Run("trace/"+tc.name, func(t *testing.T) {
			r := patch(t, s, p, tc.start, tc.data)
			if r.Code != tc.want || r.Header.Get("Range") != tc.wantRange {
				t.Errorf("PATCH %d+%d: %d Range %q, want %d %q", tc.start, len(tc.data), r.Code, r.Header.Get("Range"), tc.want, tc.wantRange)
			}
			if tc.want == http.StatusAccepted {
				trace += tc.data
				if r.Header.Get("Job-Status") != "running" || r.Header.Get("X-GitLab-Trace-Update-Interval") != "3" {
					t.Errorf("headers %v", r.Header)
				}
			}
		})
	}
	if r := call(t, s, "PATCH", "jobs/"+itoa(id)+"/trace", hdr("JOB-TOKEN", p.Token), []byte("x")); r.Code != http.StatusBadRequest {
		t.Errorf("PATCH without Content-Range: %d, want 400", r.Code)
	}
	if r := call(t, s, "PATCH", "jobs/"+itoa(id)+"/trace", hdr("JOB-TOKEN", "glcbt-wrong", "Content-Range", "48-48"), []byte("x")); r.Code != http.StatusForbidden {
		t.Errorf("PATCH with a wrong token: %d, want 403", r.Code)
	}

	final := map[string]any{"output": map[string]any{"checksum": fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE([]byte(trace))), "bytesize": len(trace)},
		"failure_reason": "script_failure", "exit_code": 3}
	r = update(t, s, p, "failed", final)
	if r.Code != http.StatusAccepted || r.Header.Get("X-GitLab-Trace-Update-Interval") == "" {
		t.Errorf("first final update with FinalUpdateAccepts 1: %d %v, want 202 with an interval", r.Code, r.Header)
	}
	r = update(t, s, p, "failed", final)
	if r.Code != http.StatusOK || r.Header.Get("Job-Status") != "failed" {
		t.Errorf("second final update: %d Job-Status %q, want 200 failed", r.Code, r.Header.Get("Job-Status"))
	}
	rec, err := s.Wait(testCtx(t, 5*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != gitlab.StatusFailed || rec.FailureReason != "script_failure" || rec.ExitCode != 3 || !rec.ChecksumOK ||
		rec.Trace != trace || len(rec.Patches) != 3 || len(rec.Updates) != 3 || rec.FinishedAt.IsZero() {
		t.Errorf("final record %+v", rec)
	}
	if at := rec.ByteAt(strings.Index(rec.Trace, "$ true")); !at.Equal(rec.Patches[1].At) || rec.FirstTraceAt() != rec.Patches[0].At {
		t.Errorf("ByteAt: %v, patches %+v", at, rec.Patches)
	}
	if r := patch(t, s, p, len(trace), "late"); r.Code != http.StatusForbidden || r.Header.Get("Job-Status") != "failed" {
		t.Errorf("PATCH after finish: %d Job-Status %q, want 403 failed", r.Code, r.Header.Get("Job-Status"))
	}
	if r := update(t, s, p, "success", nil); r.Code != http.StatusForbidden {
		t.Errorf("PUT after finish: %d, want 403", r.Code)
	}
	if r := update(t, s, payload{ID: 9999, Token: p.Token}, "running", nil); r.Code != http.StatusNotFound {
		t.Errorf("PUT unknown job: %d, want 404", r.Code)
	}
}

// TestCancel covers the three ways a cancel reaches a runner: a queued job
// never leaves the queue; a graceful runner sees Job-Status: canceling and
// its final update ends the job canceled; any other runner is refused with
// Job-Status: canceled.
func TestCancel(t *testing.T) {
	s := start(t, gitlab.Options{})
	repo := addRepo(t, s)
	token := s.CreateRunner("r")
	spec := gitlab.JobSpec{Name: "long", Project: repo.Path, Script: []string{"sleep 600"}}

	t.Run("queued", func(t *testing.T) {
		id := enqueue(t, s, spec)
		if err := s.Cancel(id); err != nil {
			t.Fatal(err)
		}
		if r := call(t, s, "POST", "jobs/request", nil, map[string]any{"token": token, "info": info(true)}); r.Code != http.StatusNoContent {
			t.Errorf("request after cancel: %d, want 204", r.Code)
		}
		rec, err := s.Wait(testCtx(t, time.Second), id)
		if err != nil || rec.Status != gitlab.StatusCanceled {
			t.Errorf("Wait: %v %+v", err, rec)
		}
		if err := s.Cancel(id); err == nil {
			t.Error("second Cancel of a canceled job succeeded")
		}
	})
	t.Run("graceful", func(t *testing.T) {
		id := enqueue(t, s, spec)
		p := requestJob(t, s, token, "s_graceful", true)
		update(t, s, p, "running", nil)
		patch(t, s, p, 0, "$ sleep 600\n")
		if err := s.Cancel(id); err != nil {
			t.Fatal(err)
		}
		r := patch(t, s, p, 12, "more\n")
		if r.Code != http.StatusAccepted || r.Header.Get("Job-Status") != "canceling" {
			t.Fatalf("PATCH while canceling: %d Job-Status %q, want 202 canceling", r.Code, r.Header.Get("Job-Status"))
		}
		if r := update(t, s, p, "running", nil); r.Code != http.StatusOK || r.Header.Get("Job-Status") != "canceling" {
			t.Errorf("touch while canceling: %d %q", r.Code, r.Header.Get("Job-Status"))
		}
		if r := update(t, s, p, "failed", map[string]any{"failure_reason": "job_canceled"}); r.Code != http.StatusOK {
			t.Errorf("final update: %d", r.Code)
		}
		rec, err := s.Wait(testCtx(t, time.Second), id)
		// No checksum was sent, so it cannot have matched.
		if err != nil || rec.Status != gitlab.StatusCanceled || rec.State != "failed" || rec.CancelAt.IsZero() || rec.ChecksumOK {
			t.Errorf("Wait: %v %+v", err, rec)
		}
	})
	t.Run("not graceful", func(t *testing.T) {
		id := enqueue(t, s, spec)
		p := requestJob(t, s, token, "s_abrupt", false)
		update(t, s, p, "running", nil)
		if err := s.Cancel(id); err != nil {
			t.Fatal(err)
		}
		r := patch(t, s, p, 0, "x")
		if r.Code != http.StatusForbidden || r.Header.Get("Job-Status") != "canceled" {
			t.Errorf("PATCH after cancel: %d Job-Status %q, want 403 canceled", r.Code, r.Header.Get("Job-Status"))
		}
		if rec, _ := s.Job(id); rec.Status != gitlab.StatusCanceled || !rec.Done() {
			t.Errorf("record %+v", rec)
		}
	})
}

// TestQueue: FIFO across runners, each job handed out once, and a long
// poll that returns as soon as a job is queued.
func TestQueue(t *testing.T) {
	s := start(t, gitlab.Options{LongPoll: 20 * time.Second})
	repo := addRepo(t, s)
	runners := []string{s.CreateRunner("a"), s.CreateRunner("b"), s.CreateRunner("c")}

	// First request: no last_update yet, answered at once as Rails does.
	begin := time.Now()
	r := call(t, s, "POST", "jobs/request", nil, map[string]any{"token": runners[0], "info": info(true)})
	lastUpdate := r.Header.Get("X-GitLab-Last-Update")
	if r.Code != http.StatusNoContent || lastUpdate == "" || time.Since(begin) > 5*time.Second {
		t.Fatalf("first request: %d after %v, last update %q", r.Code, time.Since(begin), lastUpdate)
	}

	got := make(chan int64, len(runners))
	var wg sync.WaitGroup
	for _, tok := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := send(s, "POST", "jobs/request", nil, map[string]any{"token": tok, "info": info(true), "last_update": lastUpdate})
			var p payload
			switch {
			case err != nil:
				t.Error(err)
			case r.Code == http.StatusCreated:
				if err := json.Unmarshal(r.Body, &p); err != nil {
					t.Error(err)
				}
				got <- p.ID
			case r.Code != http.StatusNoContent:
				t.Errorf("long poll: %d %s", r.Code, r.Body)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let all three park in the long poll
	enqueuedAt := time.Now()
	ids := []int64{
		enqueue(t, s, gitlab.JobSpec{Name: "one", Project: repo.Path, Script: []string{"true"}}),
		enqueue(t, s, gitlab.JobSpec{Name: "two", Project: repo.Path, Script: []string{"true"}}),
	}
	wg.Wait()
	close(got)
	if waited := time.Since(enqueuedAt); waited > 5*time.Second {
		t.Errorf("long polls returned %v after the enqueue, want promptly", waited)
	}
	seen := map[int64]bool{}
	for id := range got {
		if seen[id] {
			t.Errorf("job %d handed out twice", id)
		}
		seen[id] = true
	}
	// Parked requests wake on the first enqueue; whoever misses it gets
	// 204 and asks again, so one or two jobs went out here.
	if !seen[ids[0]] {
		t.Errorf("FIFO: first job %d not handed out; got %v", ids[0], seen)
	}
	for len(seen) < 2 {
		p := requestJob(t, s, runners[2], "", true)
		if seen[p.ID] {
			t.Fatalf("job %d handed out twice", p.ID)
		}
		seen[p.ID] = true
	}
	if r := call(t, s, "POST", "jobs/request", nil, map[string]any{"token": runners[1], "info": info(true)}); r.Code != http.StatusNoContent {
		t.Errorf("drained queue: %d, want 204", r.Code)
	}
}
