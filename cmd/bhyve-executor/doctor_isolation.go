package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// doctorIsolation checks what the bind step needs: the template's switch is
// private, and the privilege prefix lets the runner run the binding's arp
// and ifconfig invocations.
func doctorIsolation(ctx context.Context, c *checks, s *settings.Settings, d *vmbhyve.Driver) {
	if !s.Isolation {
		c.ok("isolation", "OFF (isolation = false): UNSAFE, a job with root in its VM can take a neighbour job's address or MAC and receive its scripts and secrets")
		return
	}
	conf, err := d.ReadConf(s.Template)
	if err != nil {
		c.fail("private switch", err.Error(), "fix the template check above first")
		return
	}
	name := conf["network0_switch"]
	sws, err := d.Switches(ctx)
	if err != nil {
		c.fail("private switch", err.Error(), hintOr(err, "allow the runner user to run `vm switch list` (see the README's sudoers rules)"))
		return
	}
	bridge := ""
	for _, sw := range sws {
		if sw.Name != name {
			continue
		}
		if !sw.Private {
			c.fail("private switch", fmt.Sprintf("switch %q of template %s is not private: job VMs on it can reach each other", name, s.Template),
				fmt.Sprintf("vm switch private %s on   (applies to VMs started afterwards); or isolation = false (unsafe)", name))
			return
		}
		bridge = sw.Iface
		c.ok("private switch", "%s (bridge %s) is private: job VMs reach the host and the uplink, not each other", name, bridge)
	}
	if bridge == "" {
		c.fail("private switch", fmt.Sprintf("template %s's network0_switch %q is not in `vm switch list`", s.Template, name), "set network0_switch in the template's conf to an existing standard or manual switch")
		return
	}

	// Harmless invocations the README's sudoers rules allow: a lookup, and
	// the removal of a bridge entry no VM has (the executor never hands
	// out 58:9c:fc:00:00:00).
	probes := []struct {
		name string
		cmd  []string
		args []string
		gone string // an expected "no such entry" answer, which proves the command ran as root
	}{
		{"arp command", s.ArpCommand, []string{"-n", "127.0.0.1"}, "-- no entry"},
		{"ifconfig command", s.IfconfigCommand, []string{bridge, "deladdr", "58:9c:fc:00:00:00"}, "No such file or directory"},
	}
	for _, p := range probes {
		argv := strings.Join(append(append(append([]string{}, s.Privilege...), p.cmd...), p.args...), " ")
		_, _, err := d.RunHost(ctx, p.cmd, p.args...)
		var ce *vmbhyve.CommandError
		switch {
		case err == nil:
		case errors.As(err, &ce) && (strings.Contains(ce.Stderr, p.gone) || strings.Contains(ce.Stdout, p.gone)):
		default:
			c.fail(p.name, err.Error(), hintOr(err, fmt.Sprintf("allow `%s` in the README's sudoers rules, or set %s", argv, strings.ReplaceAll(p.name, " ", "_"))))
			continue
		}
		c.ok(p.name, "%s runs without a password", argv)
	}
}
