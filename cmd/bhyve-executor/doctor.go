package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// checks prints doctor's findings: what was checked, what was seen, and for
// a failure, what to do about it.
type checks struct {
	w      io.Writer
	failed int
	warned int
}

func (c *checks) ok(name, format string, args ...any) {
	fmt.Fprintf(c.w, "[ ok ] %s: %s\n", name, fmt.Sprintf(format, args...))
}

func (c *checks) fail(name, detail, fix string) {
	c.failed++
	fmt.Fprintf(c.w, "[FAIL] %s: %s\n", name, detail)
	if fix != "" {
		fmt.Fprintf(c.w, "       fix: %s\n", strings.ReplaceAll(fix, "\n", "\n            "))
	}
}

// doctor checks the host end to end, in the order a job needs things, and
// says how to fix each problem. It keeps going after a failure where later
// checks still mean something, so one run lists everything that is wrong.
func doctor(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	boot := fs.Bool("boot", false, "also clone, boot, inspect and destroy one VM, as a job would")
	runnerBinary := fs.String("runner-binary", defaultRunnerBinary, "with --boot: the host's gitlab-runner, whose version the guest's must match")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usagef("usage: doctor [--boot [--runner-binary PATH]]")
	}
	c := &checks{w: a.stdout}

	s, err := a.settings()
	if err != nil {
		c.fail("settings", err.Error(), "fix bhyve.toml as the message says; helpers/settings/REFERENCE.md lists every key")
		return c.result()
	}
	c.ok("settings", "%s, runner %q", s.Path, s.RunnerName)

	h, err := a.host()
	if err != nil {
		return err
	}
	d := h.Driver(s)
	vmOK := doctorVM(ctx, c, s, d)
	doctorSysrc(c, s)
	if vmOK {
		if doctorTemplateState(ctx, c, s, d, s.Template) {
			doctorHostKeys(ctx, c, s, d, s.Template)
		}
		doctorResources(ctx, c, s, h)
		doctorIsolation(ctx, c, s, d)
	}
	doctorLeases(ctx, c, s)
	doctorSSH(c, s)

	if *boot {
		if c.failed > 0 {
			c.fail("test boot", "skipped because of the failures above", "fix those first, then run doctor --boot again")
		} else {
			checkClone(ctx, c, s, h, s.Template, *runnerBinary)
		}
	}
	return c.result()
}

func (c *checks) result() error {
	if c.failed > 0 {
		fmt.Fprintf(c.w, "%d check(s) failed, %d warning(s)\n", c.failed, c.warned)
		return errReported
	}
	if c.warned > 0 {
		fmt.Fprintf(c.w, "all checks passed, %d warning(s)\n", c.warned)
		return nil
	}
	fmt.Fprintln(c.w, "all checks passed")
	return nil
}

func doctorVM(ctx context.Context, c *checks, s *settings.Settings, d *vmbhyve.Driver) bool {
	v, err := d.Version(ctx)
	if err != nil {
		c.fail("vm command", err.Error(), hintOr(err, fmt.Sprintf("install sysutils/vm-bhyve, or set vm_command to its path (now %q)", strings.Join(s.VMCommand, " "))))
		return false
	}
	c.ok("vm command", "%s reports vm-bhyve %s", strings.Join(s.VMArgv(), " "), v)

	// `vm version` answers before vm-bhyve's root check; `vm list` proves
	// the privilege prefix works without a password.
	if _, err := d.List(ctx); err != nil {
		c.fail("privilege", err.Error(), hintOr(err, "allow the runner user to run vm without a password (see the README's sudoers/doas rules)"))
		return false
	}
	if len(s.Privilege) > 0 {
		c.ok("privilege", "%s runs vm list without asking for a password", strings.Join(s.Privilege, " "))
	} else {
		c.ok("privilege", "no privilege prefix; vm list works as user %d", os.Getuid())
	}
	return true
}

func doctorSysrc(c *checks, s *settings.Settings) {
	bin := s.SysrcCommand[0]
	if _, err := exec.LookPath(bin); err != nil {
		c.fail("sysrc command", err.Error(), fmt.Sprintf("set sysrc_command to sysrc's path (FreeBSD: /usr/sbin/sysrc); now %q", bin))
		return
	}
	c.ok("sysrc command", "%s (writes each clone's MAC and ownership marker)", bin)
}

func doctorLeases(ctx context.Context, c *checks, s *settings.Settings) {
	// A MAC no guest has: the lookup reads and parses every lease file
	// without finding anything, which is exactly the question.
	probe := net.HardwareAddr{0x58, 0x9c, 0xfc, 0x00, 0x00, 0x00}
	_, err := kea.NewReader(s.LeaseFile).Lookup(ctx, probe, time.Now())
	switch {
	case err == nil, errors.Is(err, kea.ErrNoLease):
		c.ok("lease file", "%s is readable and parses", s.LeaseFile)
	case errors.Is(err, os.ErrPermission):
		c.fail("lease file", err.Error(), fmt.Sprintf("let the runner user read %s: Kea recreates the file on every cleanup with mode 0640, so give its directory's group to the runner user (chgrp) rather than chmod the file", s.LeaseFile))
	case errors.Is(err, os.ErrNotExist):
		c.fail("lease file", err.Error(), fmt.Sprintf("point lease_file at Kea's memfile (lease-database name in kea-dhcp4.conf; FreeBSD default /var/db/kea/kea-leases4.csv); now %q", s.LeaseFile))
	default:
		c.fail("lease file", err.Error(), "is this Kea's DHCPv4 memfile CSV? other DHCP servers' lease files are not supported")
	}
}

func doctorSSH(c *checks, s *settings.Settings) {
	signers, err := s.Signers()
	switch {
	case err != nil:
		c.fail("ssh key", err.Error(), "set ssh.identity_file to a private key (without passphrase) whose public half is in the template's authorized_keys")
	case len(signers) == 0:
		c.ok("ssh key", "none; password authentication for user %q", s.SSH.User)
	default:
		c.ok("ssh key", "%s %s for user %q", signers[0].PublicKey().Type(), ssh.FingerprintSHA256(signers[0].PublicKey()), s.SSH.User)
	}

	keys, err := s.HostKeysFor(s.Template)
	switch {
	case err != nil:
		c.fail("host key", err.Error(), fmt.Sprintf("pin the template's host key: ssh-keyscan a booted clone, or read %s/%s/…/etc/ssh/ssh_host_ed25519_key.pub, and put `%s <key>` in ssh.known_hosts_file", s.VMDir, s.Template, s.Template))
	case s.SSH.InsecureSkipHostKeyCheck:
		c.fail("host key", "ssh.insecure_skip_host_key_check is set: jobs connect to whatever answers at the leased address", "pin the template's host key with ssh.known_hosts_file or ssh.host_key")
	default:
		fps := make([]string, 0, len(keys))
		for _, k := range keys {
			fps = append(fps, k.Type()+" "+ssh.FingerprintSHA256(k))
		}
		c.ok("host key", "%s pinned: %s", s.Template, strings.Join(fps, ", "))
	}
}

func timings(vm *jobvm.VM) string {
	parts := make([]string, 0, len(vm.Timings))
	for _, t := range vm.Timings {
		parts = append(parts, fmt.Sprintf("%s %s", t.Phase, t.Took.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// hintOr prefers the driver's own advice (it knows sudo from doas).
func hintOr(err error, fallback string) string {
	var ce *vmbhyve.CommandError
	if errors.As(err, &ce) && ce.Hint != "" {
		return ce.Hint
	}
	return fallback
}
