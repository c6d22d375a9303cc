package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/guestssh"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// templateCheck is `template check NAME`: the template's state on the host,
// then a clone booted as a job's would be and inspected from inside.
func templateCheck(ctx context.Context, a *app, args []string) error {
	name, rest := splitName(args)
	fs := flag.NewFlagSet("template check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runnerBinary := fs.String("runner-binary", defaultRunnerBinary, "the host's gitlab-runner, whose version the guest's must match")
	if err := fs.Parse(rest); err != nil || fs.NArg() > 0 || name == "" {
		return usagef("usage: template check %s", templateSubcommands[1].usage)
	}
	e, err := a.templateEnv(name)
	if err != nil {
		return err
	}
	h, err := a.host()
	if err != nil {
		return err
	}
	c := &checks{w: a.stdout}
	if doctorTemplateState(ctx, c, e.s, e.d, name) {
		doctorHostKeys(ctx, c, e.s, e.d, name)
		checkClone(ctx, c, e.s, h, name, *runnerBinary)
	} else {
		c.fail("test boot", "skipped because of the failures above", "fix those first, then run template check "+name+" again")
	}
	return c.result()
}

func (c *checks) warn(name, detail, fix string) {
	c.warned++
	fmt.Fprintf(c.w, "[WARN] %s: %s\n", name, detail)
	if fix != "" {
		fmt.Fprintf(c.w, "       fix: %s\n", fix)
	}
}

// doctorTemplateState checks what a clone inherits from the template's
// dataset: it must be stopped with no run.lock (a snapshot taken otherwise
// carries the lock into every clone), and the configured snapshot must
// exist ("latest" resolved as a job would).
func doctorTemplateState(ctx context.Context, c *checks, s *settings.Settings, d *vmbhyve.Driver, tmpl string) bool {
	vm, exists, err := d.Get(ctx, tmpl)
	okSoFar := true
	switch {
	case err != nil:
		c.fail("template", err.Error(), "")
		return false
	case !exists:
		c.fail("template", fmt.Sprintf("no VM %q in `vm list`", tmpl), fmt.Sprintf("build it: bhyve-executor template build %s --image FILE (or set template in %s)", tmpl, s.Path))
		return false
	case vm.State != vmbhyve.StateStopped:
		c.fail("template", fmt.Sprintf("%s is %s", tmpl, vm.StateText),
			fmt.Sprintf("stop it (`vm stop %s`): a running template's snapshot would carry run.lock and a dirty disk into every clone; a Locked template with no bhyve process has a stale %s/%s/run.lock to remove", tmpl, s.VMDir, tmpl))
		okSoFar = false
	default:
		if _, err := os.Stat(filepath.Join(s.VMDir, tmpl, "run.lock")); err == nil {
			c.fail("template", fmt.Sprintf("%s has a run.lock", tmpl), fmt.Sprintf("remove the stale %s/%s/run.lock (no bhyve process runs it)", s.VMDir, tmpl))
			okSoFar = false
		} else {
			c.ok("template", "%s exists, is stopped and has no run.lock", tmpl)
		}
	}
	snap, err := d.ResolveSnapshot(tmpl, s.Snapshot)
	if err == nil {
		var has bool
		has, err = d.HasSnapshot(tmpl, snap)
		if err == nil && !has {
			err = fmt.Errorf("%s@%s not found", tmpl, snap)
		}
	}
	if err != nil {
		c.fail("snapshot", err.Error(), fmt.Sprintf("with the template stopped: vm snapshot %s@%s (or set snapshot in %s); for snapshot = %q: bhyve-executor template rotate %s", tmpl, s.Snapshot, s.Path, vmbhyve.SnapshotLatest, tmpl))
		return false
	}
	c.ok("snapshot", "%s@%s (settings: snapshot = %q)", tmpl, snap, s.Snapshot)
	return okSoFar
}

// guestProbe runs in the clone's login shell, as jobs do; each line is
// KEY=VALUE.
const guestProbe = `for t in bash git gitlab-runner; do echo "path_$t=$(command -v $t)"; done
echo "runner=$(gitlab-runner --version 2>/dev/null | sed -n 's/^Version: *//p')"
`

// checkClone boots a clone of tmpl as a job would (pinned host key, job
// user's key), inspects it and destroys it.
func checkClone(ctx context.Context, c *checks, s *settings.Settings, h *jobvm.Host, tmpl, runnerBinary string) {
	m := h.Manager(s, tmpl, "")
	name := fmt.Sprintf("%scheck-%d", s.NamePrefix, os.Getpid())
	var steps []string
	vm, err := m.CreateNamed(ctx, context.WithoutCancel(ctx), name, 0, func(format string, args ...any) {
		steps = append(steps, fmt.Sprintf(format, args...))
	})
	if err != nil {
		c.fail("test boot", err.Error(), cloneFix(err, s, tmpl, steps))
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.StopTimeout+cleanupSlack)
		defer cancel()
		if err := vm.Close(dctx); err != nil {
			c.fail("cleanup", fmt.Sprintf("%s could not be destroyed: %v", name, err), "destroy it by hand: vm poweroff -f "+name+"; vm destroy -f "+name)
		}
	}()
	var ready time.Duration
	for _, t := range vm.Timings {
		ready += t.Took
	}
	c.ok("test boot", "clone %s at %s: host key matches the pin, user %q logged in with the key; SSH ready in %s (%s)", name, vm.Address.IP, s.SSH.User, ready.Round(time.Millisecond), timings(vm))
	checkCloneHostKey(c, vm)

	probe := guestProbe + fmt.Sprintf("for d in %s %s; do if [ -d \"$d\" ] && [ -w \"$d\" ]; then echo \"dir_$d=ok\"; else echo \"dir_$d=no\"; fi; done\n", shQuote(s.BuildsDir), shQuote(s.CacheDir))
	var out strings.Builder
	if err := vm.Run(ctx, strings.NewReader(probe), &out, &out); err != nil {
		c.fail("guest tools", fmt.Sprintf("probe failed: %v: %s", err, out.String()), "check the template's shell ("+s.ShellCommand()+")")
		return
	}
	got := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	var missing []string
	for _, t := range []string{"bash", "git"} {
		if got["path_"+t] == "" {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		c.fail("guest tools", strings.Join(missing, ", ")+" not on the job user's PATH", fmt.Sprintf("pkg install %s in the template: bhyve-executor template rotate %s", strings.Join(missing, " "), tmpl))
	} else {
		c.ok("guest tools", "bash %s, git %s", got["path_bash"], got["path_git"])
	}
	checkRunner(ctx, c, tmpl, got["path_gitlab-runner"], got["runner"], runnerBinary)
	for _, d := range []string{s.BuildsDir, s.CacheDir} {
		if got["dir_"+d] != "ok" {
			c.fail("guest dirs", fmt.Sprintf("%s is missing or not writable by %s", d, s.SSH.User), fmt.Sprintf("install -d -o %s %s in the template (the default provisioning does): bhyve-executor template rotate %s", s.SSH.User, d, tmpl))
		} else {
			c.ok("guest dirs", "%s is writable by %s", d, s.SSH.User)
		}
	}
}

// checkRunner compares the guest's gitlab-runner with the host's: artifact
// and cache uploads run the guest's binary, which must speak the host
// runner's protocol.
func checkRunner(ctx context.Context, c *checks, tmpl, guestPath, guestVersion, hostBinary string) {
	const why = "artifacts and caches will not work"
	hostVersion, herr := hostRunnerVersion(ctx, hostBinary)
	fix := fmt.Sprintf("bhyve-executor template rotate %s installs the host's gitlab-runner (--runner-binary) or --runner-url", tmpl)
	switch {
	case guestPath == "":
		c.warn("gitlab-runner", "not on the job user's PATH in the guest: "+why, fix)
	case herr != nil:
		c.warn("gitlab-runner", fmt.Sprintf("guest has %s %s, host version unknown: %v", guestPath, guestVersion, herr), "pass --runner-binary with the host's gitlab-runner")
	case guestVersion != hostVersion:
		c.warn("gitlab-runner", fmt.Sprintf("guest has %s, host runs %s: %s", orUnknown(guestVersion), hostVersion, why), fix)
	default:
		c.ok("gitlab-runner", "%s %s, same as the host's", guestPath, guestVersion)
	}
}

func orUnknown(v string) string {
	if v == "" {
		return "an unknown version"
	}
	return v
}

// cloneFix says what to change when a test clone does not come up.
func cloneFix(err error, s *settings.Settings, tmpl string, steps []string) string {
	var auth *guestssh.AuthError
	var hk *guestssh.HostKeyError
	switch {
	case errors.As(err, &hk) && hk.Advice != "":
		return fmt.Sprintf("the clone did not present the per-VM key it was given: its first boot did not apply cloud-init ssh_keys. Keep nuageinit and /firstboot in the snapshot (`touch /firstboot` last before `vm stop`; bhyve-executor template rotate %s does), or set host_keys = %q", tmpl, settings.HostKeysTemplate)
	case errors.As(err, &hk):
		return fmt.Sprintf("the clone's host key is not the one pinned for %s: its host keys were regenerated (cloud-init ssh_deletekeys, keys deleted before the snapshot). Rebuild with `bhyve-executor template build`, or pin the new key if you changed it on purpose", tmpl)
	case errors.As(err, &auth):
		return fmt.Sprintf("the template does not accept ssh.identity_file (%s) for user %q: add its public key to that user's authorized_keys in the template (bhyve-executor template rotate %s does), or fix identity_file/user", s.SSH.IdentityFile, s.SSH.User, tmpl)
	}
	return "the steps that worked: " + strings.Join(steps, "; ")
}
