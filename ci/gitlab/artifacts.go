package gitlab

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

var artifactTypeRe = regexp.MustCompile(`^[a-z_]+$`)

// POST /api/v4/jobs/:id/artifacts (lib/api/ci/runner.rb "Upload
// artifacts"): multipart form with the file in field "file";
// artifact_type (default archive) and artifact_format (default zip) in the
// query. 201 once stored; 400 without a file; the job token of the running
// job authenticates.
func (s *Server) handleArtifactsUpload(w http.ResponseWriter, r *http.Request, id int64) {
	s.mu.Lock()
	j := s.authenticateJobLocked(w, id, r.Header.Get("JOB-TOKEN"))
	s.mu.Unlock()
	if j == nil {
		return
	}
	q := r.URL.Query()
	typ, format := q.Get("artifact_type"), q.Get("artifact_format")
	if typ == "" {
		typ = "archive"
	}
	if format == "" {
		format = "zip"
	}
	if !artifactTypeRe.MatchString(typ) {
		apiError(w, http.StatusBadRequest, "400 Bad request - artifact_type does not have a valid value")
		return
	}
	file, header, err := r.FormFile("file")
	if err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request - Missing artifacts file!")
		return
	}
	defer file.Close()
	dir := filepath.Join(s.dir, "artifacts", strconv.FormatInt(id, 10))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		apiError(w, http.StatusInternalServerError, "500 "+err.Error())
		return
	}
	dst := filepath.Join(dir, typ)
	size, err := copyToFile(dst, file)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "500 "+err.Error())
		return
	}
	s.mu.Lock()
	kept := j.rec.Artifacts[:0]
	for _, a := range j.rec.Artifacts {
		if a.Type != typ {
			kept = append(kept, a)
		}
	}
	j.rec.Artifacts = append(kept, ArtifactFile{Type: typ, Format: format, Filename: header.Filename, Size: size, Path: dst})
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]string{})
}

func copyToFile(dst string, src io.Reader) (int64, error) {
	f, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// GET /api/v4/jobs/:id/artifacts (authenticate_job_via_dependent_job!):
// the JOB-TOKEN (or ?token=) is that of a job still running in the
// project, the dependent job, not the job whose artifacts are fetched.
// 200 with the archive; 403 for a token of no running job; 404 for no
// such job or no archive.
func (s *Server) handleArtifactsDownload(w http.ResponseWriter, r *http.Request, id int64) {
	token := r.Header.Get("JOB-TOKEN")
	if token == "" {
		token = r.URL.Query().Get("token")
	}
	s.mu.Lock()
	caller := s.jobByTokenLocked(token)
	target := s.jobs[id]
	var file *ArtifactFile
	if target != nil {
		for _, a := range target.rec.Artifacts {
			if a.Type == "archive" {
				a := a
				file = &a
			}
		}
	}
	s.mu.Unlock()
	switch {
	case target == nil:
		apiError(w, http.StatusNotFound, "404 Not Found")
		return
	case caller == nil || caller.project != target.project:
		apiError(w, http.StatusForbidden, "403 Forbidden")
		return
	case file == nil:
		apiError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	f, err := os.Open(file.Path)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "500 "+err.Error())
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", file.Filename))
	w.Header().Set("Content-Length", strconv.FormatInt(file.Size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

// readAll reads a request body of at most 32 MiB, well above upstream's
// 1 MiB trace patches (common.DefaultTracePatchLimit).
func readAll(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 32<<20+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 32<<20 {
		return nil, fmt.Errorf("body over 32 MiB")
	}
	return b, nil
}
