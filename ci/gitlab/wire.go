package gitlab

import "time"

// The JSON shapes below are this package's own, with the field names that
// upstream gitlab-runner's common/network.go (requests) and common/spec
// (the job payload) put in their json tags. Only the fields a runner sends
// or reads are declared; encoding/json ignores the rest of what it sends.

// runnerInfo is the "info" object every runner request carries.
type runnerInfo struct {
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Revision     string            `json:"revision"`
	Platform     string            `json:"platform"`
	Architecture string            `json:"architecture"`
	Executor     string            `json:"executor"`
	Shell        string            `json:"shell"`
	Features     map[string]bool   `json:"features"`
	Labels       map[string]string `json:"labels"`
}

type registerRequest struct {
	Description string     `json:"description"`
	Tags        string     `json:"tag_list"`
	RunUntagged bool       `json:"run_untagged"`
	Locked      bool       `json:"locked"`
	Paused      bool       `json:"paused"`
	Info        runnerInfo `json:"info"`
	Token       string     `json:"token"`
}

// tokenResponse answers register, verify and reset_authentication_token.
type tokenResponse struct {
	ID             int64      `json:"id,omitempty"`
	Token          string     `json:"token"`
	TokenExpiresAt *time.Time `json:"token_expires_at"` // null: no expiry, as Rails sends
}

type verifyRequest struct {
	Info     runnerInfo `json:"info"`
	Token    string     `json:"token"`
	SystemID string     `json:"system_id"`
}

type tokenRequest struct {
	Token    string `json:"token"`
	SystemID string `json:"system_id"`
}

type jobRequest struct {
	Info       runnerInfo `json:"info"`
	Token      string     `json:"token"`
	SystemID   string     `json:"system_id"`
	LastUpdate string     `json:"last_update"`
}

type updateJobRequest struct {
	Info          runnerInfo `json:"info"`
	Token         string     `json:"token"`
	State         string     `json:"state"`
	FailureReason string     `json:"failure_reason"`
	Checksum      string     `json:"checksum"`
	Output        struct {
		Checksum string `json:"checksum"`
		Bytesize int    `json:"bytesize"`
	} `json:"output"`
	ExitCode int `json:"exit_code"`
}

// The job payload (upstream spec.Job and its parts).

type jobPayload struct {
	ID            int64          `json:"id"`
	Token         string         `json:"token"`
	AllowGitFetch bool           `json:"allow_git_fetch"`
	JobInfo       jobInfo        `json:"job_info"`
	GitInfo       gitInfo        `json:"git_info"`
	RunnerInfo    jobRunnerInfo  `json:"runner_info"`
	Variables     []Variable     `json:"variables"`
	Steps         []step         `json:"steps"`
	Image         image          `json:"image"`
	Services      []image        `json:"services"`
	Artifacts     []artifact     `json:"artifacts"`
	Cache         []any          `json:"cache"`
	Credentials   []any          `json:"credentials"`
	Dependencies  []dependency   `json:"dependencies"`
	Features      gitlabFeatures `json:"features"`
}

type jobInfo struct {
	Name            string `json:"name"`
	Stage           string `json:"stage"`
	PipelineID      int64  `json:"pipeline_id"`
	ProjectID       int64  `json:"project_id"`
	ProjectName     string `json:"project_name"`
	ProjectFullPath string `json:"project_full_path"`
	NamespaceID     int64  `json:"namespace_id"`
	RootNamespaceID int64  `json:"root_namespace_id"`
	UserID          int64  `json:"user_id"`
}

type gitInfo struct {
	RepoURL          string   `json:"repo_url"`
	RepoObjectFormat string   `json:"repo_object_format"`
	Ref              string   `json:"ref"`
	Sha              string   `json:"sha"`
	BeforeSha        string   `json:"before_sha"`
	RefType          string   `json:"ref_type"`
	Refspecs         []string `json:"refspecs"`
	Depth            int      `json:"depth"`
	Protected        *bool    `json:"protected"`
}

type jobRunnerInfo struct {
	Timeout int `json:"timeout"`
}

// Variable is one job variable as GitLab sends it. Masked values are
// replaced by "[MASKED]" in the trace by the runner itself.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

type step struct {
	Name         string   `json:"name"`
	Script       []string `json:"script"`
	Timeout      int      `json:"timeout"`
	When         string   `json:"when"`
	AllowFailure bool     `json:"allow_failure"`
}

type image struct {
	Name string `json:"name,omitempty"`
}

type artifact struct {
	Name      string   `json:"name"`
	Untracked bool     `json:"untracked"`
	Paths     []string `json:"paths"`
	Exclude   []string `json:"exclude"`
	When      string   `json:"when"`
	Type      string   `json:"artifact_type"`
	Format    string   `json:"artifact_format"`
	ExpireIn  string   `json:"expire_in"`
}

type dependency struct {
	ID            int64          `json:"id"`
	Token         string         `json:"token"`
	Name          string         `json:"name"`
	ArtifactsFile *artifactsFile `json:"artifacts_file,omitempty"`
}

type artifactsFile struct {
	Filename string `json:"filename"`
	Size     int64  `json:"size"`
}

type gitlabFeatures struct {
	TraceSections     bool     `json:"trace_sections"`
	TokenMaskPrefixes []string `json:"token_mask_prefixes"`
	FailureReasons    []string `json:"failure_reasons"`
}
