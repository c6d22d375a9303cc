package gitlab_test

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

// TestGuestClones puts the server where the demo puts it: listening in the
// simulated host's namespace at the guests' default route. A job is taken
// from inside the host and a guest clones the job's repo_url with git.
func TestGuestClones(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	h := sim.New(t, sim.Options{})
	l, err := h.Listen(ctx, "tcp", h.HostAddr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, gitlab.Options{Listener: l})
	if !strings.HasPrefix(s.URL(), "http://"+h.HostAddr().String()+":") {
		t.Fatalf("URL %s, want http://%s:<port>", s.URL(), h.HostAddr())
	}
	repo := addRepo(t, s)
	token := s.CreateRunner("sim")
	enqueue(t, s, gitlab.JobSpec{Name: "clone", Project: repo.Path, Script: []string{"true"}})

	// The runner's side, from inside the host.
	inHost := &http.Client{Transport: &http.Transport{DialContext: h.DialContext}}
	r, err := sendWith(inHost, s, "POST", "jobs/request", nil, map[string]any{"token": token, "info": info(true)})
	if err != nil || r.Code != http.StatusCreated {
		t.Fatalf("jobs/request from the host: %v %d %s", err, r.Code, r.Body)
	}
	var p payload
	r.json(t, &p)

	const name = "clone-1"
	vmCmd := func(args ...string) {
		t.Helper()
		if r, err := h.VM(ctx, args...); err != nil || r.ExitCode != 0 {
			t.Fatalf("vm %v: %v %s", args, err, r)
		}
	}
	vmCmd("clone", h.Template()+"@"+h.Snapshot(), name)
	vmCmd("start", name)
	t.Cleanup(func() {
		_, _ = h.VM(context.Background(), "poweroff", "-f", name)
		_, _ = h.VM(context.Background(), "destroy", "-f", name)
	})
	guest, err := h.GuestAddr(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	script := "cd /builds && GIT_TERMINAL_PROMPT=0 git clone --quiet '" + p.GitInfo.RepoURL + "' src && git -C src rev-parse HEAD"
	var out []byte
	for {
		out, err = h.Command(ctx, "ssh", "-i", h.SSHKeyPath(), "-o", "UserKnownHostsFile="+h.KnownHostsPath(),
			"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
			h.SSHUser()+"@"+guest.String(), script).CombinedOutput()
		// 255 is ssh's own failure (sshd not up yet); anything else is git's.
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 255 || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || strings.TrimSpace(string(out)) != repo.SHA {
		t.Fatalf("clone in guest: %v\n%s", err, out)
	}
	var gitRequests int
	for _, rq := range s.Requests() {
		if strings.HasPrefix(rq.Path, "/group/project.git/") && rq.Status == http.StatusOK {
			gitRequests++
		}
	}
	if gitRequests < 2 {
		t.Errorf("%d successful git requests recorded, want info/refs and git-upload-pack", gitRequests)
	}
}
