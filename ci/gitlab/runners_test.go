package gitlab_test

import (
	"net/http"
	"strings"
	"testing"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
)

type tokenAnswer struct {
	ID             int64   `json:"id"`
	Token          string  `json:"token"`
	TokenExpiresAt *string `json:"token_expires_at"`
}

// TestLegacyRegistration follows `gitlab-runner register` with a
// registration token: POST /runners, then the token it got works on
// /runners/verify; anything but the registration token is refused.
func TestLegacyRegistration(t *testing.T) {
	s := start(t, gitlab.Options{RegistrationToken: "GR1348941reg"})
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"registration token", "GR1348941reg", http.StatusCreated},
		{"wrong token", "GR1348941nope", http.StatusForbidden},
		{"no token", "", http.StatusForbidden},
		{"created-runner token is no registration token", s.CreateRunner("ui"), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, s, "POST", "runners", hdr("RUNNER-TOKEN", tc.token), map[string]any{
				"token": tc.token, "description": "sim-runner", "tag_list": "bhyve, freebsd",
				"run_untagged": true, "info": info(true),
			})
			if r.Code != tc.want {
				t.Fatalf("POST /runners: %d %s, want %d", r.Code, r.Body, tc.want)
			}
			if tc.want != http.StatusCreated {
				return
			}
			var got tokenAnswer
			r.json(t, &got)
			if got.ID == 0 || got.Token == "" || strings.HasPrefix(got.Token, gitlab.CreatedRunnerTokenPrefix) {
				t.Fatalf("registration answer %s: want an id and a token without %s", r.Body, gitlab.CreatedRunnerTokenPrefix)
			}
			v := call(t, s, "POST", "runners/verify", nil, map[string]any{"token": got.Token, "system_id": "s_abc", "info": info(true)})
			if v.Code != http.StatusOK {
				t.Fatalf("verify registered token: %d %s", v.Code, v.Body)
			}
			var runner *gitlab.Runner
			for _, rn := range s.Runners() {
				if rn.Token == got.Token {
					runner = &rn
				}
			}
			if runner == nil || runner.Created || runner.Description != "sim-runner" ||
				strings.Join(runner.Tags, ",") != "bhyve,freebsd" || len(runner.Managers) != 1 || runner.Managers[0].SystemID != "s_abc" {
				t.Errorf("runner record %+v", runner)
			}
		})
	}
}

// TestCreatedRunnerLifecycle is the glrt- path: verify (as `register
// --token glrt-...` and every `run` start do), reset the token, unregister
// the manager, unregister the runner; each step refuses what it must.
func TestCreatedRunnerLifecycle(t *testing.T) {
	s := start(t, gitlab.Options{})
	token := s.CreateRunner("created in UI")
	if !strings.HasPrefix(token, gitlab.CreatedRunnerTokenPrefix) {
		t.Fatalf("CreateRunner token %q lacks %s", token, gitlab.CreatedRunnerTokenPrefix)
	}
	verify := func(token, systemID string) response {
		return call(t, s, "POST", "runners/verify", hdr("RUNNER-TOKEN", token),
			map[string]any{"token": token, "system_id": systemID, "info": info(true)})
	}

	r := verify(token, "s_one")
	if r.Code != http.StatusOK {
		t.Fatalf("verify: %d %s", r.Code, r.Body)
	}
	var v tokenAnswer
	r.json(t, &v)
	if v.Token != token || v.ID == 0 || v.TokenExpiresAt != nil {
		t.Errorf("verify answer %s: want the same token, an id, token_expires_at null", r.Body)
	}
	if r := verify("glrt-unknown", "s_one"); r.Code != http.StatusForbidden {
		t.Errorf("verify unknown token: %d, want 403", r.Code)
	}
	verify(token, "s_two")
	if m := s.Runners()[0].Managers; len(m) != 2 || m[0].SystemID != "s_one" || m[1].SystemID != "s_two" ||
		!m[0].Features["cancel_gracefully"] || m[0].Version != "18.4.0" {
		t.Errorf("managers %+v", m)
	}

	r = call(t, s, "POST", "runners/reset_authentication_token", nil, map[string]string{"token": token})
	if r.Code != http.StatusCreated {
		t.Fatalf("reset: %d %s", r.Code, r.Body)
	}
	var reset tokenAnswer
	r.json(t, &reset)
	if reset.Token == token || !strings.HasPrefix(reset.Token, gitlab.CreatedRunnerTokenPrefix) {
		t.Fatalf("reset gave %q", reset.Token)
	}
	if r := verify(token, "s_one"); r.Code != http.StatusForbidden {
		t.Errorf("old token after reset: %d, want 403", r.Code)
	}
	if r := verify(reset.Token, "s_one"); r.Code != http.StatusOK {
		t.Errorf("new token after reset: %d, want 200", r.Code)
	}

	for _, tc := range []struct {
		name     string
		body     map[string]string
		want     int
		managers int
	}{
		{"unknown token", map[string]string{"token": token, "system_id": "s_one"}, http.StatusForbidden, 2},
		{"no system_id", map[string]string{"token": reset.Token}, http.StatusBadRequest, 2},
		{"manager", map[string]string{"token": reset.Token, "system_id": "s_one"}, http.StatusNoContent, 1},
		{"same manager again", map[string]string{"token": reset.Token, "system_id": "s_one"}, http.StatusNotFound, 1},
	} {
		t.Run("unregister manager/"+tc.name, func(t *testing.T) {
			r := call(t, s, "DELETE", "runners/managers", hdr("RUNNER-TOKEN", tc.body["token"]), tc.body)
			if r.Code != tc.want {
				t.Errorf("DELETE /runners/managers: %d %s, want %d", r.Code, r.Body, tc.want)
			}
			if got := len(s.Runners()[0].Managers); got != tc.managers {
				t.Errorf("%d managers left, want %d", got, tc.managers)
			}
		})
	}

	if r := call(t, s, "DELETE", "runners", nil, map[string]string{"token": token}); r.Code != http.StatusForbidden {
		t.Errorf("unregister with old token: %d, want 403", r.Code)
	}
	if r := call(t, s, "DELETE", "runners", nil, map[string]string{"token": reset.Token}); r.Code != http.StatusNoContent {
		t.Errorf("unregister: %d %s, want 204", r.Code, r.Body)
	}
	if len(s.Runners()) != 0 {
		t.Errorf("runners left after unregister: %+v", s.Runners())
	}
	if r := verify(reset.Token, "s_two"); r.Code != http.StatusForbidden {
		t.Errorf("verify after unregister: %d, want 403", r.Code)
	}
	if r := call(t, s, "POST", "jobs/request", nil, map[string]any{"token": reset.Token, "info": info(true)}); r.Code != http.StatusForbidden {
		t.Errorf("jobs/request after unregister: %d, want 403", r.Code)
	}
}
