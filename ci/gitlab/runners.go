package gitlab

import (
	"net/http"
	"sort"
	"strings"
	"time"
)

// CreatedRunnerTokenPrefix marks authentication tokens of runners created
// in GitLab's UI or API (upstream network.TokenIsCreatedRunnerToken); such
// runners skip POST /runners and go straight to POST /runners/verify.
const CreatedRunnerTokenPrefix = "glrt-"

// Runner is a registered runner as the server sees it.
type Runner struct {
	ID          int64
	Token       string
	Description string
	Tags        []string
	// Created is true for a runner made with CreateRunner (glrt- token),
	// false for one registered with the registration token.
	Created  bool
	Managers []Manager
}

// Manager is one runner process (system_id) that used a runner's token,
// GitLab's "runner manager".
type Manager struct {
	SystemID    string
	ContactedAt time.Time
	Version     string
	Executor    string
	Features    map[string]bool
}

type runner struct {
	Runner
	managers map[string]*Manager
}

// CreateRunner makes a runner as GitLab's UI does ("New instance runner")
// and returns its glrt- authentication token, for `gitlab-runner register
// --token glrt-...` (which verifies it) or a config.toml written directly.
func (s *Server) CreateRunner(description string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.newRunnerLocked(CreatedRunnerTokenPrefix+randomToken(10), description)
	r.Created = true
	return r.Token
}

// Runners lists the registered runners, oldest first.
func (s *Server) Runners() []Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Runner
	for _, r := range s.runners {
		c := r.Runner
		c.Tags = append([]string(nil), r.Tags...)
		c.Managers = nil
		for _, m := range r.managers {
			mc := *m
			c.Managers = append(c.Managers, mc)
		}
		sort.Slice(c.Managers, func(i, j int) bool { return c.Managers[i].SystemID < c.Managers[j].SystemID })
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) newRunnerLocked(token, description string) *runner {
	r := &runner{Runner: Runner{ID: s.nextRunnerID, Token: token, Description: description}, managers: map[string]*Manager{}}
	s.nextRunnerID++
	s.runners[token] = r
	return r
}

// runnerLocked is the runner with an authentication token, or nil.
func (s *Server) runnerLocked(token string) *runner {
	if token == "" {
		return nil
	}
	return s.runners[token]
}

// authenticateRunnerLocked is Rails' authenticate_runner!: it answers 403
// and returns nil for a token no runner has.
func (s *Server) authenticateRunnerLocked(w http.ResponseWriter, token string) *runner {
	rn := s.runnerLocked(token)
	if rn == nil {
		apiError(w, http.StatusForbidden, "403 Forbidden")
	}
	return rn
}

// touchManagerLocked records the runner process behind a request, as
// Rails' ensure_runner_manager does on verify and jobs/request.
func (r *runner) touchManagerLocked(systemID string, info runnerInfo) {
	if systemID == "" {
		return
	}
	m := r.managers[systemID]
	if m == nil {
		m = &Manager{SystemID: systemID}
		r.managers[systemID] = m
	}
	m.ContactedAt = time.Now()
	if info.Version != "" {
		m.Version, m.Executor = info.Version, info.Executor
	}
	if info.Features != nil {
		m.Features = info.Features
	}
}

// POST /api/v4/runners (lib/api/ci/runner.rb "Register a new runner"):
// 201 with id, token, token_expires_at; 403 for any token but the
// registration token.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	if req.Token == "" || req.Token != s.regToken {
		s.mu.Unlock()
		apiError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	// Runners registered with a registration token get an authentication
	// token without the glrt- prefix.
	rn := s.newRunnerLocked(randomToken(10), req.Description)
	for _, t := range strings.Split(req.Tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			rn.Tags = append(rn.Tags, t)
		}
	}
	resp := tokenResponse{ID: rn.ID, Token: rn.Token}
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, resp)
}

// POST /api/v4/runners/verify: 200 with id, token, token_expires_at for a
// known authentication token (recording the manager by system_id), 403
// otherwise.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rn := s.authenticateRunnerLocked(w, req.Token); rn != nil {
		rn.touchManagerLocked(req.SystemID, req.Info)
		writeJSON(w, http.StatusOK, tokenResponse{ID: rn.ID, Token: rn.Token})
	}
}

// DELETE /api/v4/runners: 204, 403 for an unknown token.
func (s *Server) handleUnregister(w http.ResponseWriter, r *http.Request) {
	s.withRunner(w, r, func(rn *runner, _ tokenRequest) {
		delete(s.runners, rn.Token)
		w.WriteHeader(http.StatusNoContent)
	})
}

// DELETE /api/v4/runners/managers (UnregisterRunnerManagerService): 204;
// 403 for an unknown token, 400 without system_id, 404 for a system_id
// the runner never used.
func (s *Server) handleUnregisterManager(w http.ResponseWriter, r *http.Request) {
	s.withRunner(w, r, func(rn *runner, req tokenRequest) {
		switch {
		case req.SystemID == "":
			apiError(w, http.StatusBadRequest, "400 Bad request - `system_id` needs to be specified for runners created in the UI.")
		case rn.managers[req.SystemID] == nil:
			apiError(w, http.StatusNotFound, "404 Not Found")
		default:
			delete(rn.managers, req.SystemID)
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

// POST /api/v4/runners/reset_authentication_token: 201 with the new token;
// the old one stops working at once. 403 for an unknown token.
func (s *Server) handleResetToken(w http.ResponseWriter, r *http.Request) {
	s.withRunner(w, r, func(rn *runner, _ tokenRequest) {
		delete(s.runners, rn.Token)
		prefix := ""
		if rn.Created {
			prefix = CreatedRunnerTokenPrefix
		}
		rn.Token = prefix + randomToken(10)
		s.runners[rn.Token] = rn
		writeJSON(w, http.StatusCreated, tokenResponse{Token: rn.Token})
	})
}

// withRunner decodes a {token, system_id} body and runs fn under the lock
// for the runner it authenticates; otherwise it has answered 400 or 403.
func (s *Server) withRunner(w http.ResponseWriter, r *http.Request, fn func(*runner, tokenRequest)) {
	var req tokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rn := s.authenticateRunnerLocked(w, req.Token); rn != nil {
		fn(rn, req)
	}
}
