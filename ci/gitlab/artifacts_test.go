package gitlab_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"os"
	"testing"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

// uploadArtifacts posts a file as upstream's UploadRawArtifacts does:
// multipart field "file", format and type in the query, JOB-TOKEN header.
func uploadArtifacts(t *testing.T, s *gitlab.Server, p payload, token string, data []byte) response {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("file", "artifacts.zip")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	mw.Close()
	return call(t, s, "POST", "jobs/"+itoa(p.ID)+"/artifacts?artifact_format=zip&artifact_type=archive",
		hdr("JOB-TOKEN", token, "Content-Type", mw.FormDataContentType()), body.Bytes())
}

// TestArtifactsRoundTrip: job A uploads, job B depends on A, its payload
// names A's archive with B's own token (as Rails sends it), and B's token
// downloads exactly the bytes A uploaded. Finished jobs' tokens and
// strangers are refused.
func TestArtifactsRoundTrip(t *testing.T) {
	s := start(t, gitlab.Options{})
	repo := addRepo(t, s)
	token := s.CreateRunner("r")
	zip := []byte("PK\x03\x04 not really a zip, the server does not look inside")

	a := enqueue(t, s, gitlab.JobSpec{Name: "build", Project: repo.Path, Script: []string{"make"},
		Artifacts: &gitlab.Artifacts{Paths: []string{"out/"}}})
	pa := requestJob(t, s, token, "s", true)
	update(t, s, pa, "running", nil)
	if r := uploadArtifacts(t, s, pa, "glcbt-wrong", zip); r.Code != http.StatusForbidden {
		t.Errorf("upload with a wrong token: %d, want 403", r.Code)
	}
	if r := call(t, s, "POST", "jobs/"+itoa(a)+"/artifacts", hdr("JOB-TOKEN", pa.Token), nil); r.Code != http.StatusBadRequest {
		t.Errorf("upload without a file: %d, want 400", r.Code)
	}
	if r := uploadArtifacts(t, s, pa, pa.Token, zip); r.Code != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Code, r.Body)
	}
	update(t, s, pa, "success", nil)

	b := enqueue(t, s, gitlab.JobSpec{Name: "test", Project: repo.Path, Script: []string{"make test"}, Dependencies: []int64{a}})
	pb := requestJob(t, s, token, "s", true)
	if len(pb.Dependencies) != 1 {
		t.Fatalf("dependencies %+v", pb.Dependencies)
	}
	d := pb.Dependencies[0]
	if d.ID != a || d.Name != "build" || d.Token != pb.Token || d.ArtifactsFile.Filename != "artifacts.zip" || d.ArtifactsFile.Size != int64(len(zip)) {
		t.Errorf("dependency %+v, want id %d name build token of job %d artifacts.zip of %d bytes", d, a, b, len(zip))
	}
	if pb.JobInfo.PipelineID != pa.JobInfo.PipelineID {
		t.Errorf("dependent job in pipeline %d, its dependency in %d", pb.JobInfo.PipelineID, pa.JobInfo.PipelineID)
	}
	update(t, s, pb, "running", nil)

	for _, tc := range []struct {
		name  string
		job   int64
		token string
		want  int
	}{
		{"dependent job's token", a, pb.Token, http.StatusOK},
		{"finished job's own token", a, pa.Token, http.StatusForbidden},
		{"no token", a, "", http.StatusForbidden},
		{"job without artifacts", b, pb.Token, http.StatusNotFound},
		{"no such job", 424242, pb.Token, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, s, "GET", "jobs/"+itoa(tc.job)+"/artifacts?direct_download=false", hdr("JOB-TOKEN", tc.token), nil)
			if r.Code != tc.want {
				t.Fatalf("GET artifacts: %d %s, want %d", r.Code, r.Body, tc.want)
			}
			if tc.want == http.StatusOK && !bytes.Equal(r.Body, zip) {
				t.Errorf("downloaded %q, uploaded %q", r.Body, zip)
			}
		})
	}
	rec, _ := s.Job(a)
	if len(rec.Artifacts) != 1 || rec.Artifacts[0].Type != "archive" || rec.Artifacts[0].Format != "zip" {
		t.Fatalf("artifacts record %+v", rec.Artifacts)
	}
	if stored, err := os.ReadFile(rec.Artifacts[0].Path); err != nil || !bytes.Equal(stored, zip) {
		t.Errorf("stored file: %v %q", err, stored)
	}
}
