package gitlab

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Job statuses, as GitLab names them in the Job-Status header.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusCanceling = "canceling"
	StatusSuccess   = "success"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
)

// DefaultFailureReasons are the failure reasons GitLab lists in a job's
// features.failure_reasons (Ci::Build failure_reason enum, the ones a
// runner can report). Upstream maps any reason not listed to one that is
// (common/failure_reason_mapper.go).
var DefaultFailureReasons = []string{
	"unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
	"runner_system_failure", "missing_dependency_failure", "runner_unsupported",
	"stale_schedule", "job_execution_timeout", "archived_failure", "unmet_prerequisites",
	"scheduler_failure", "data_integrity_failure", "forward_deployment_failure",
	"user_blocked", "project_deleted", "ci_quota_exceeded", "pipeline_loop_detected",
	"no_matching_runner", "trace_size_exceeded", "builds_disabled",
	"environment_creation_failure", "deployment_rejected", "failed_outdated_deployment_job",
	"protected_environment_failure", "insufficient_bridge_permissions",
	"downstream_bridge_project_not_found", "invalid_bridge_trigger",
	"upstream_bridge_project_not_found", "insufficient_upstream_permissions",
	"bridge_pipeline_is_child_pipeline", "downstream_pipeline_creation_failed",
	"secrets_provider_not_found", "reached_max_descendant_pipelines_depth",
	"ip_restriction_failure", "reached_max_pipeline_hierarchy_size",
}

// JobSpec declares a job the way .gitlab-ci.yml would.
type JobSpec struct {
	Name    string // required
	Stage   string // "" is "test"
	Project string // required: a path given to AddRepo
	Ref     string // branch; "" is the project's default branch

	Script      []string // required
	AfterScript []string
	// Variables are the job's own (YAML or project CI/CD) variables, sent
	// after GitLab's predefined ones. Use Var and MaskedVar.
	Variables []Variable
	Image     string

	Artifacts *Artifacts
	// Dependencies are earlier jobs whose artifacts this job downloads.
	// The job joins the first dependency's pipeline.
	Dependencies []int64

	Timeout      time.Duration // "" is GitLab's default of 1h
	GitDepth     int           // 0 is GitLab's default for new projects, 20; -1 sends 0 (full clone)
	AllowFailure bool
}

// Artifacts is a job's artifacts: section.
type Artifacts struct {
	Name      string
	Paths     []string
	Exclude   []string
	Untracked bool
	When      string // on_success (""), on_failure, always
	ExpireIn  string
}

// Var is a public variable, as a .gitlab-ci.yml variables: entry is sent.
func Var(key, value string) Variable { return Variable{Key: key, Value: value, Public: true} }

// MaskedVar is a masked CI/CD variable, as GitLab sends one: not public,
// masked, so the runner replaces its value in the trace.
func MaskedVar(key, value string) Variable { return Variable{Key: key, Value: value, Masked: true} }

// TracePatch is one accepted PATCH /jobs/:id/trace.
type TracePatch struct {
	At     time.Time
	Offset int
	Length int
}

// Update is one PUT /jobs/:id and how it was answered.
type Update struct {
	At            time.Time
	State         string
	FailureReason string
	ExitCode      int
	Checksum      string
	Bytesize      int
	Code          int
}

// ArtifactFile is an uploaded artifact.
type ArtifactFile struct {
	Type     string // artifact_type, "archive" for artifacts: paths
	Format   string // artifact_format, e.g. "zip"
	Filename string
	Size     int64
	Path     string // where the server stored it
}

// JobRecord is what the server knows about a job.
type JobRecord struct {
	ID       int64
	Name     string
	Token    string
	Status   string
	RunnerID int64
	SystemID string // runner manager that took it

	EnqueuedAt time.Time
	ReceivedAt time.Time // 201 to POST /jobs/request
	AcceptedAt time.Time // PUT state=running (two-phase commit) or ReceivedAt
	CancelAt   time.Time // Cancel called
	FinishedAt time.Time // Status became success, failed or canceled

	Trace   string
	Patches []TracePatch
	Updates []Update

	// From the final update that finished the job.
	State         string
	FailureReason string
	ExitCode      int
	// ChecksumOK: the runner's crc32 of its trace matched what was received.
	ChecksumOK bool

	Artifacts []ArtifactFile
}

// Done reports a terminal status.
func (r JobRecord) Done() bool {
	return r.Status == StatusSuccess || r.Status == StatusFailed || r.Status == StatusCanceled
}

// FirstTraceAt is when the first trace byte arrived (zero if none).
func (r JobRecord) FirstTraceAt() time.Time { return r.ByteAt(0) }

// ByteAt is when the trace byte at offset arrived, false if it has not.
// With strings.Index(r.Trace, marker) it times a script's output.
func (r JobRecord) ByteAt(offset int) time.Time {
	for _, p := range r.Patches {
		if offset >= p.Offset && offset < p.Offset+p.Length {
			return p.At
		}
	}
	return time.Time{}
}

type job struct {
	spec       JobSpec
	rec        JobRecord
	project    *project
	pipelineID int64
	runner     *runner
	manager    *Manager
	accepts    int // 202s given to final updates
	done       chan struct{}
}

// Enqueue queues a job for any runner, first in first out.
func (s *Server) Enqueue(spec JobSpec) (int64, error) {
	if spec.Name == "" || len(spec.Script) == 0 {
		return 0, fmt.Errorf("fake gitlab: job %q: give a Name and at least one Script line", spec.Name)
	}
	if spec.Timeout < 0 || spec.Timeout%time.Second != 0 {
		return 0, fmt.Errorf("fake gitlab: job %s: timeout %v must be whole seconds", spec.Name, spec.Timeout)
	}
	switch spec.Artifacts.when() {
	case "on_success", "on_failure", "always":
	default:
		return 0, fmt.Errorf("fake gitlab: job %s: artifacts when %q: want on_success, on_failure or always", spec.Name, spec.Artifacts.When)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[spec.Project]
	if p == nil {
		return 0, fmt.Errorf("fake gitlab: job %s: project %q: create it with AddRepo first", spec.Name, spec.Project)
	}
	if spec.Ref == "" {
		spec.Ref = p.repo.DefaultBranch
	}
	if spec.Ref != p.repo.DefaultBranch {
		return 0, fmt.Errorf("fake gitlab: job %s: ref %q: project %s only has %s", spec.Name, spec.Ref, spec.Project, p.repo.DefaultBranch)
	}
	id := s.nextJobID
	s.nextJobID++
	pipeline := id
	for i, dep := range spec.Dependencies {
		d := s.jobs[dep]
		if d == nil || d.project != p {
			return 0, fmt.Errorf("fake gitlab: job %s: dependency %d is not an earlier job of %s", spec.Name, dep, spec.Project)
		}
		if i == 0 {
			pipeline = d.pipelineID
		}
	}
	if pipeline == id {
		// Every pipeline has a persistent ref the runner fetches by sha.
		if err := s.updateRef(p, "refs/pipelines/"+strconv.FormatInt(pipeline, 10), p.repo.SHA); err != nil {
			return 0, fmt.Errorf("fake gitlab: job %s: %w", spec.Name, err)
		}
	}
	j := &job{
		spec: spec, project: p, pipelineID: pipeline, done: make(chan struct{}),
		rec: JobRecord{
			ID: id, Name: spec.Name, Status: StatusPending, EnqueuedAt: time.Now(),
			// GitLab job tokens carry the glcbt- prefix.
			Token: "glcbt-" + randomToken(10),
		},
	}
	s.jobs[id] = j
	s.queue = append(s.queue, id)
	s.bumpQueueLocked()
	return id, nil
}

func (a *Artifacts) when() string {
	if a == nil || a.When == "" {
		return "on_success"
	}
	return a.When
}

// Cancel cancels a job as the UI's Cancel button does: a queued job is
// canceled at once; a running one whose runner manager declared
// cancel_gracefully becomes canceling (the runner sees Job-Status:
// canceling, runs after_script and reports), otherwise canceled, and the
// runner's next trace or update request is refused with Job-Status:
// canceled.
func (s *Server) Cancel(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("fake gitlab: cancel: no job %d", id)
	}
	if j.rec.Done() || j.rec.Status == StatusCanceling {
		return fmt.Errorf("fake gitlab: cancel job %d: already %s", id, j.rec.Status)
	}
	j.rec.CancelAt = time.Now()
	switch {
	case j.runner == nil:
		s.removeQueuedLocked(id)
		s.finishLocked(j, StatusCanceled)
	case j.manager != nil && j.manager.Features["cancel_gracefully"]:
		j.rec.Status = StatusCanceling
	default:
		s.finishLocked(j, StatusCanceled)
	}
	return nil
}

// Job returns a job's record so far.
func (s *Server) Job(id int64) (JobRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return JobRecord{}, false
	}
	return j.snapshotLocked(), true
}

// Wait returns a job's record once it is success, failed or canceled.
func (s *Server) Wait(ctx context.Context, id int64) (JobRecord, error) {
	s.mu.Lock()
	j := s.jobs[id]
	s.mu.Unlock()
	if j == nil {
		return JobRecord{}, fmt.Errorf("fake gitlab: wait: no job %d", id)
	}
	select {
	case <-j.done:
		rec, _ := s.Job(id)
		return rec, nil
	case <-ctx.Done():
		rec, _ := s.Job(id)
		return rec, fmt.Errorf("fake gitlab: job %d still %s: %w", id, rec.Status, ctx.Err())
	}
}

func (j *job) snapshotLocked() JobRecord {
	r := j.rec
	r.Patches = append([]TracePatch(nil), r.Patches...)
	r.Updates = append([]Update(nil), r.Updates...)
	r.Artifacts = append([]ArtifactFile(nil), r.Artifacts...)
	return r
}

func (s *Server) finishLocked(j *job, status string) {
	j.rec.Status = status
	j.rec.FinishedAt = time.Now()
	close(j.done)
}

func (s *Server) removeQueuedLocked(id int64) {
	for i, q := range s.queue {
		if q == id {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			s.bumpQueueLocked()
			return
		}
	}
}

func (s *Server) bumpQueueLocked() {
	s.queueVersion++
	close(s.queueChanged)
	s.queueChanged = make(chan struct{})
}

// processing is Rails' "job is processing on a runner": the only states in
// which the job token authenticates.
func (j *job) processing() bool {
	switch j.rec.Status {
	case StatusRunning, StatusCanceling:
		return true
	case StatusPending:
		return j.runner != nil // taken, awaiting the runner's two-phase commit
	}
	return false
}

func (s *Server) jobByTokenLocked(token string) *job {
	if token == "" {
		return nil
	}
	for _, j := range s.jobs {
		if j.rec.Token == token && j.processing() {
			return j
		}
	}
	return nil
}

// POST /api/v4/jobs/request: 201 with the job payload, 204 with
// X-GitLab-Last-Update when nothing is queued, 403 for an unknown token.
// With LongPoll the request is held, as Workhorse holds it, while the
// runner's last_update equals the queue's and nothing changes.
func (s *Server) handleJobRequest(w http.ResponseWriter, r *http.Request) {
	var req jobRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Token == "" {
		req.Token = r.Header.Get("RUNNER-TOKEN")
	}
	var deadline <-chan time.Time
	if s.opts.LongPoll > 0 {
		t := time.NewTimer(s.opts.LongPoll)
		defer t.Stop()
		deadline = t.C
	}
	s.mu.Lock()
	rn := s.authenticateRunnerLocked(w, req.Token)
	if rn == nil {
		s.mu.Unlock()
		return
	}
	rn.touchManagerLocked(req.SystemID, req.Info)
	if deadline != nil && len(s.queue) == 0 && req.LastUpdate == s.lastUpdateLocked() {
		changed := s.queueChanged
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
		case <-r.Context().Done():
		}
		s.mu.Lock()
		if s.authenticateRunnerLocked(w, req.Token) == nil {
			s.mu.Unlock()
			return
		}
	}
	if len(s.queue) == 0 {
		lu := s.lastUpdateLocked()
		s.mu.Unlock()
		w.Header().Set("X-GitLab-Last-Update", lu)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	id := s.queue[0]
	s.queue = s.queue[1:]
	s.bumpQueueLocked()
	j := s.jobs[id]
	j.runner = rn
	j.manager = rn.managers[req.SystemID]
	j.rec.RunnerID, j.rec.SystemID = rn.ID, req.SystemID
	j.rec.ReceivedAt = time.Now()
	if !req.Info.Features["two_phase_job_commit"] {
		// Without two-phase commit Rails starts the job as it hands it out.
		j.rec.Status = StatusRunning
		j.rec.AcceptedAt = j.rec.ReceivedAt
	}
	body, err := json.Marshal(s.payloadLocked(j, r))
	s.mu.Unlock()
	if err != nil {
		apiError(w, http.StatusInternalServerError, "500 "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
}

func (s *Server) lastUpdateLocked() string { return strconv.FormatInt(s.queueVersion, 10) }

// baseURL is the server's URL as this client reached it, so a runner and
// a guest that reach it by different addresses each get one that works.
func (s *Server) baseURL(r *http.Request) *url.URL {
	u, err := url.Parse(s.url)
	if err != nil || r.Host == "" {
		return u
	}
	u.Host = r.Host
	return u
}

// payloadLocked builds the job as Rails' Ci::BuildRunnerPresenter and
// API::Entities::Ci::JobRequest::Response present it.
func (s *Server) payloadLocked(j *job, r *http.Request) jobPayload {
	base := s.baseURL(r)
	p := j.project
	timeout := int(j.spec.Timeout / time.Second)
	if timeout == 0 {
		timeout = 3600
	}
	depth := j.spec.GitDepth
	switch {
	case depth == 0:
		depth = 20
	case depth < 0:
		depth = 0
	}
	repoURL := *base
	repoURL.User = url.UserPassword("gitlab-ci-token", j.rec.Token)
	repoURL.Path = "/" + p.repo.Path + ".git"
	pipelineRef := "refs/pipelines/" + strconv.FormatInt(j.pipelineID, 10)
	refspecs := []string{"+" + p.repo.SHA + ":" + pipelineRef}
	if depth > 0 {
		refspecs = append(refspecs, "+refs/heads/"+j.spec.Ref+":refs/remotes/origin/"+j.spec.Ref)
	} else {
		refspecs = append(refspecs, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
	}
	protected := false

	steps := []step{{Name: "script", Script: j.spec.Script, Timeout: timeout, When: "on_success", AllowFailure: j.spec.AllowFailure}}
	if len(j.spec.AfterScript) > 0 {
		steps = append(steps, step{Name: "after_script", Script: j.spec.AfterScript, Timeout: timeout, When: "always", AllowFailure: true})
	}
	var arts []artifact
	if a := j.spec.Artifacts; a != nil {
		name := a.Name
		if name == "" {
			name = "artifacts"
		}
		arts = append(arts, artifact{Name: name, Untracked: a.Untracked, Paths: a.Paths, Exclude: a.Exclude,
			When: a.when(), Type: "archive", Format: "zip", ExpireIn: a.ExpireIn})
	}
	var deps []dependency
	for _, id := range j.spec.Dependencies {
		d := s.jobs[id]
		dep := dependency{ID: id, Name: d.spec.Name, Token: j.rec.Token}
		for _, f := range d.rec.Artifacts {
			if f.Type == "archive" {
				dep.ArtifactsFile = &artifactsFile{Filename: f.Filename, Size: f.Size}
			}
		}
		deps = append(deps, dep)
	}
	return jobPayload{
		ID: j.rec.ID, Token: j.rec.Token, AllowGitFetch: true,
		JobInfo: jobInfo{
			Name: j.spec.Name, Stage: j.stage(), PipelineID: j.pipelineID,
			ProjectID: p.id, ProjectName: p.name(), ProjectFullPath: p.repo.Path,
			NamespaceID: 1, RootNamespaceID: 1, UserID: 1,
		},
		GitInfo: gitInfo{
			RepoURL: repoURL.String(), RepoObjectFormat: "sha1", Ref: j.spec.Ref, Sha: p.repo.SHA,
			BeforeSha: strings.Repeat("0", 40), RefType: "branch", Refspecs: refspecs, Depth: depth,
			Protected: &protected,
		},
		RunnerInfo:   jobRunnerInfo{Timeout: timeout},
		Variables:    append(s.predefinedLocked(j, base, repoURL.String()), j.spec.Variables...),
		Steps:        steps,
		Image:        image{Name: j.spec.Image},
		Services:     []image{},
		Artifacts:    arts,
		Cache:        []any{},
		Credentials:  []any{},
		Dependencies: deps,
		Features: gitlabFeatures{
			TraceSections: true, TokenMaskPrefixes: []string{}, FailureReasons: s.opts.FailureReasons,
		},
	}
}

func (j *job) stage() string {
	if j.spec.Stage == "" {
		return "test"
	}
	return j.spec.Stage
}

func (p *project) name() string {
	return p.repo.Path[strings.LastIndex(p.repo.Path, "/")+1:]
}

// predefinedLocked is the subset of GitLab's predefined CI/CD variables
// (doc/ci/variables/predefined_variables.md) that upstream or ordinary
// scripts read. The runner adds its own (CI_PROJECT_DIR, CI_BUILDS_DIR,
// CI_SERVER=yes, CI_JOB_STATUS, CI_JOB_TIMEOUT, ...).
func (s *Server) predefinedLocked(j *job, base *url.URL, repoURL string) []Variable {
	p := j.project
	server := strings.TrimSuffix(base.String(), "/")
	port := base.Port()
	if port == "" {
		port = "80"
	}
	projectURL := server + "/" + p.repo.Path
	id := strconv.FormatInt(j.rec.ID, 10)
	pipeline := strconv.FormatInt(j.pipelineID, 10)
	namespace := p.repo.Path[:strings.LastIndex(p.repo.Path, "/")]
	tags := "[]"
	if len(j.runner.Tags) > 0 {
		b, _ := json.Marshal(j.runner.Tags)
		tags = string(b)
	}
	pub := func(k, v string) Variable { return Variable{Key: k, Value: v, Public: true} }
	return []Variable{
		pub("CI", "true"),
		pub("GITLAB_CI", "true"),
		pub("CI_SERVER_URL", server),
		pub("CI_SERVER_HOST", base.Hostname()),
		pub("CI_SERVER_PORT", port),
		pub("CI_SERVER_PROTOCOL", base.Scheme),
		pub("CI_SERVER_NAME", "GitLab"),
		pub("CI_API_V4_URL", server+"/api/v4"),
		pub("CI_JOB_ID", id),
		pub("CI_JOB_NAME", j.spec.Name),
		pub("CI_JOB_STAGE", j.stage()),
		pub("CI_JOB_URL", projectURL+"/-/jobs/"+id),
		// GitLab sends the job token masked and not public.
		{Key: "CI_JOB_TOKEN", Value: j.rec.Token, Masked: true},
		{Key: "CI_BUILD_TOKEN", Value: j.rec.Token, Masked: true},
		// Not public: it embeds the job token.
		{Key: "CI_REPOSITORY_URL", Value: repoURL},
		pub("CI_PIPELINE_ID", pipeline),
		pub("CI_PIPELINE_IID", pipeline),
		pub("CI_PIPELINE_SOURCE", "push"),
		pub("CI_PIPELINE_URL", projectURL+"/-/pipelines/"+pipeline),
		pub("CI_PROJECT_ID", strconv.FormatInt(p.id, 10)),
		pub("CI_PROJECT_NAME", p.name()),
		pub("CI_PROJECT_PATH", p.repo.Path),
		pub("CI_PROJECT_PATH_SLUG", slug(p.repo.Path)),
		pub("CI_PROJECT_NAMESPACE", namespace),
		pub("CI_PROJECT_ROOT_NAMESPACE", strings.SplitN(namespace, "/", 2)[0]),
		pub("CI_PROJECT_URL", projectURL),
		pub("CI_PROJECT_VISIBILITY", "private"),
		pub("CI_DEFAULT_BRANCH", p.repo.DefaultBranch),
		pub("CI_COMMIT_SHA", p.repo.SHA),
		pub("CI_COMMIT_SHORT_SHA", p.repo.SHA[:8]),
		pub("CI_COMMIT_BEFORE_SHA", strings.Repeat("0", 40)),
		pub("CI_COMMIT_REF_NAME", j.spec.Ref),
		pub("CI_COMMIT_REF_SLUG", slug(j.spec.Ref)),
		pub("CI_COMMIT_BRANCH", j.spec.Ref),
		pub("CI_COMMIT_REF_PROTECTED", "false"),
		pub("CI_RUNNER_ID", strconv.FormatInt(j.runner.ID, 10)),
		pub("CI_RUNNER_DESCRIPTION", j.runner.Description),
		pub("CI_RUNNER_TAGS", tags),
		pub("CI_NODE_TOTAL", "1"),
		pub("GITLAB_USER_ID", "1"),
		pub("GITLAB_USER_LOGIN", "root"),
	}
}

// slug is GitLab's CI_*_SLUG: lower-cased, anything but a-z0-9 replaced
// by "-", at most 63 bytes, no leading or trailing "-".
func slug(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.Trim(string(b), "-")
}

// routeJob serves /api/v4/jobs/:id[/trace|/artifacts].
func (s *Server) routeJob(w http.ResponseWriter, r *http.Request, rest string) {
	idPart, sub, _ := strings.Cut(rest, "/")
	id, err := strconv.ParseInt(idPart, 10, 64)
	if err != nil {
		apiError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	switch {
	case sub == "" && r.Method == http.MethodPut:
		s.handleUpdate(w, r, id)
	case sub == "trace" && r.Method == http.MethodPatch:
		s.handleTrace(w, r, id)
	case sub == "artifacts" && r.Method == http.MethodPost:
		s.handleArtifactsUpload(w, r, id)
	case sub == "artifacts" && r.Method == http.MethodGet:
		s.handleArtifactsDownload(w, r, id)
	default:
		apiError(w, http.StatusNotFound, "404 Not Found")
	}
}

// authenticateJobLocked is Rails' authenticate_job!: 404 for no such job,
// 403 for a token that is not the job's, 403 with the job's Job-Status
// once it no longer runs. It writes the refusal and returns nil.
func (s *Server) authenticateJobLocked(w http.ResponseWriter, id int64, token string) *job {
	j := s.jobs[id]
	switch {
	case j == nil:
		apiError(w, http.StatusNotFound, "404 Not Found")
	case token == "" || token != j.rec.Token:
		apiError(w, http.StatusForbidden, "403 Forbidden")
	case !j.processing():
		w.Header().Set("Job-Status", j.rec.Status)
		apiError(w, http.StatusForbidden, "403 Forbidden - Job is not processing on runner")
	default:
		return j
	}
	return nil
}

// PUT /api/v4/jobs/:id (Ci::UpdateBuildStateService): state running
// touches the job (and commits a two-phase job), success or failed
// finishes it: 200, or 202 with X-GitLab-Trace-Update-Interval while the
// trace is "still being persisted" (Options.FinalUpdateAccepts). Every
// answer carries Job-Status.
func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request, id int64) {
	var req updateJobRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Token == "" {
		req.Token = r.Header.Get("JOB-TOKEN")
	}
	checksum := req.Output.Checksum
	if checksum == "" {
		checksum = req.Checksum
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := Update{At: time.Now(), State: req.State, FailureReason: req.FailureReason, ExitCode: req.ExitCode,
		Checksum: checksum, Bytesize: req.Output.Bytesize}
	j := s.authenticateJobLocked(w, id, req.Token)
	if j == nil {
		if jj := s.jobs[id]; jj != nil {
			u.Code = http.StatusForbidden
			jj.rec.Updates = append(jj.rec.Updates, u)
		}
		return
	}
	code := http.StatusOK
	switch req.State {
	case StatusRunning:
		if j.rec.Status == StatusPending {
			j.rec.Status = StatusRunning
			j.rec.AcceptedAt = u.At
		}
	case StatusSuccess, StatusFailed:
		if checksum != "" && j.accepts < s.opts.FinalUpdateAccepts {
			j.accepts++
			code = http.StatusAccepted
			w.Header().Set("X-GitLab-Trace-Update-Interval", "1")
			break
		}
		j.rec.State, j.rec.FailureReason, j.rec.ExitCode = req.State, req.FailureReason, req.ExitCode
		j.rec.ChecksumOK = checksum == fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE([]byte(j.rec.Trace)))
		final := req.State
		if j.rec.Status == StatusCanceling {
			final = StatusCanceled
		}
		s.finishLocked(j, final)
	default:
		code = http.StatusBadRequest
	}
	u.Code = code
	j.rec.Updates = append(j.rec.Updates, u)
	w.Header().Set("Job-Status", j.rec.Status)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	_, _ = fmt.Fprint(w, code)
}

// PATCH /api/v4/jobs/:id/trace (Ci::AppendBuildTraceService): the body is
// appended at the Content-Range start, which must equal the trace's size,
// else 416 with Range "0-<size>" so the runner resends from there. 202
// with Job-Status, Range "0-<new size>" and X-GitLab-Trace-Update-Interval.
func (s *Server) handleTrace(w http.ResponseWriter, r *http.Request, id int64) {
	body, err := readAll(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, "400 Bad request - "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.authenticateJobLocked(w, id, r.Header.Get("JOB-TOKEN"))
	if j == nil {
		return
	}
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		apiError(w, http.StatusBadRequest, "400 Missing header Content-Range")
		return
	}
	size := len(j.rec.Trace)
	startS, _, ok := strings.Cut(cr, "-")
	start, err := strconv.Atoi(startS)
	if !ok || err != nil || start != size {
		w.Header().Set("Range", fmt.Sprintf("0-%d", size))
		apiError(w, http.StatusRequestedRangeNotSatisfiable, "416 Range Not Satisfiable")
		return
	}
	now := time.Now()
	if len(body) > 0 {
		j.rec.Trace += string(body)
		j.rec.Patches = append(j.rec.Patches, TracePatch{At: now, Offset: start, Length: len(body)})
	}
	w.Header().Set("Job-Status", j.rec.Status)
	w.Header().Set("Range", fmt.Sprintf("0-%d", len(j.rec.Trace)))
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(int(s.opts.TraceUpdateInterval/time.Second)))
	w.WriteHeader(http.StatusAccepted)
}
