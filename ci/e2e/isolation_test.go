package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/gitlab"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/testbed"
)

// EnvNoDefences=1 runs the isolation tests against a host without the
// defences (isolation = false, a switch that is not private): the attack
// tests must then fail, which is how they were seen to fail before the
// defences existed.
const EnvNoDefences = "BHYVE_TEST_NO_DEFENCES"

func defences() bool { return os.Getenv(EnvNoDefences) != "1" }

// isolationTestbed is a host with two job slots whose switch and settings
// have the defences unless EnvNoDefences is set. Every guest records the SSH
// sessions it accepts, as an attacker with root in its VM could.
func isolationTestbed(t *testing.T, ctx context.Context, executor string) *testbed.Testbed {
	t.Helper()
	on := defences()
	tb := testbed.New(t, testbed.Options{
		Runners:  []string{"iso"},
		Sim:      sim.Options{SharedSwitch: !on},
		Settings: []string{"isolation = " + map[bool]string{true: "true", false: "false"}[on]},
	})
	require.NoError(t, tb.Host.SetFault(tb.Host.Template(), sim.Fault{RecordSessions: true}))
	var extra []string
	if executor == "custom" {
		extra = tb.CustomArgs("iso")
	}
	tb.Register(ctx, t, "iso", executor, append([]string{"--limit", "2"}, extra...)...)
	tb.SetGlobal(t, "concurrent", "2")
	tb.SetGlobal(t, "check_interval", "1")
	return tb
}

func randomHex(t *testing.T) string {
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return hex.EncodeToString(b[:])
}

// A job that gets root in its VM (the attacker) tries to receive what the
// runner sends to a neighbour job (the victim): it answers ARP for the
// victim's address, or takes over the victim's MAC, or both; every clone
// holds the template's host key, so a connection that reaches it verifies.
// The victim's later stage (after_script, a new SSH session; under the
// Custom path a new connection) prints a masked secret. The attacker must
// never record a byte of it, and the victim's stage must run in the
// victim's own VM.
func TestIsolationAttack(t *testing.T) {
	t.Parallel()
	variants := []struct {
		name  string
		fault func(victimIP, victimMAC string) sim.Fault
	}{
		{"arp answer", func(ip, _ string) sim.Fault { return sim.Fault{StealIP: ip} }},
		{"mac takeover", func(ip, mac string) sim.Fault { return sim.Fault{StealMAC: mac, StealIP: ip} }},
		// The stolen template key is what makes either takeover succeed
		// end to end; this variant uses every network trick at once with
		// it. Per-VM host keys (a separate defence) turn a takeover that
		// gets through into a host key failure.
		{"stolen template key", func(ip, mac string) sim.Fault { return sim.Fault{StealMAC: mac, StealIP: ip} }},
	}
	for _, executor := range []string{"bhyve", "custom"} {
		for _, v := range variants {
			t.Run(executor+"/"+v.name, func(t *testing.T) {
				t.Parallel()
				attackTest(t, executor, v.name, v.fault)
			})
		}
	}
}

func attackTest(t *testing.T, executor, variant string, fault func(ip, mac string) sim.Fault) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tb := isolationTestbed(t, ctx, executor)
	secret, canary := "s3cret-"+randomHex(t), "victim-canary-"+randomHex(t)
	r := tb.Start(t, "run")

	start := time.Now()
	victim := tb.Enqueue(t, gitlab.JobSpec{
		Name:        "victim",
		Script:      []string{"echo victim-ready", "sleep 5"},
		AfterScript: []string{"echo " + canary + " host=$(hostname) secret=$VICTIM_SECRET"},
		Variables:   []gitlab.Variable{gitlab.MaskedVar("VICTIM_SECRET", secret)},
	})
	attacker := tb.Enqueue(t, gitlab.JobSpec{Name: "attacker", Script: []string{"echo attacker-ready", "sleep 60"}})
	tb.WaitTrace(ctx, t, victim, "victim-ready")
	tb.WaitTrace(ctx, t, attacker, "attacker-ready")
	victimVM, attackerVM := tb.JobVM(ctx, t, victim), tb.JobVM(ctx, t, attacker)
	mac, err := tb.Host.GuestMAC(victimVM)
	require.NoError(t, err)
	addr, err := tb.Host.GuestAddr(ctx, victimVM)
	require.NoError(t, err)

	// The compromised VM strikes while the victim sleeps before its
	// after_script.
	require.NoError(t, tb.Host.SetFault(attackerVM, fault(addr.String(), mac)))
	t.Logf("%s: attack (%s) on %s (%s, %s) from %s %s after enqueue", executor, variant, victimVM, addr, mac, attackerVM, time.Since(start).Round(time.Millisecond))

	rec := tb.Wait(ctx, t, victim)
	t.Logf("%s/%s: victim finished %s (%s) after %s", executor, variant, rec.Status, rec.FailureReason, time.Since(start).Round(time.Millisecond))
	// A forceful stop ends the attacker at once; a cancel would wait for
	// upstream's 30 s trace force-send to reach a silent job.
	r.Signal(os.Interrupt)
	_ = r.Wait(ctx)
	if rec, _ := tb.GitLab.Job(attacker); rec.Status == gitlab.StatusSuccess {
		t.Errorf("the attacker job was still to be aborted, but it ended %s", rec.Status)
	}

	stolen, err := tb.Host.SessionLog(attackerVM)
	require.NoError(t, err)
	own, err := tb.Host.SessionLog(victimVM)
	require.NoError(t, err)
	gotSecret, gotScript := strings.Contains(stolen, secret), strings.Contains(stolen, canary)
	t.Logf("%s/%s: attacker recorded %d session(s); victim's secret in them: %v, victim's after_script: %v; victim recorded its own after_script: %v",
		executor, variant, strings.Count(stolen, "=== session "), gotSecret, gotScript, strings.Contains(own, canary))
	assert.False(t, gotSecret, "the attacker received the victim's secret")
	assert.False(t, gotScript, "the attacker received the victim's after_script")
	assert.True(t, strings.Contains(own, canary), "the victim's VM recorded its own after_script")

	assert.Equal(t, gitlab.StatusSuccess, rec.Status, "the victim's stages reach its own VM (failure reason %q)", rec.FailureReason)
	assert.True(t, strings.Contains(rec.Trace, canary+" host="+victimVM+" secret=[MASKED]"), "the victim's after_script ran on %s and its secret was masked", victimVM)
	if defences() {
		assert.Contains(t, rec.Trace, victimVM+" is bound to address "+addr.String()+", MAC "+mac)
	}
	tb.WaitOnlyTemplates(ctx, t)
	arp, err := tb.Host.Command(ctx, tb.Host.ArpCommand(), "-an").CombinedOutput()
	require.NoError(t, err, "%s", arp)
	assert.NotContains(t, string(arp), "permanent", "destroying the VMs removed their ARP entries")
}

// A job VM cannot open a TCP connection to another job VM's sshd on a
// private switch, while both reach the host's services (the fake GitLab on
// the bridge address). On a shared switch (the control) it can.
func TestIsolationNoGuestToGuestTCP(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{false, true} {
		name := map[bool]string{false: "private switch", true: "shared switch"}[shared]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			tb := testbed.New(t, testbed.Options{
				Runners:  []string{"iso"},
				Sim:      sim.Options{SharedSwitch: shared},
				Settings: []string{"isolation = " + map[bool]string{false: "true", true: "false"}[shared]},
			})
			tb.Register(ctx, t, "iso", "bhyve", "--limit", "2")
			tb.SetGlobal(t, "concurrent", "2")
			tb.SetGlobal(t, "check_interval", "1")
			r := tb.Start(t, "run")
			u, err := url.Parse(tb.GitLab.URL())
			require.NoError(t, err)

			target := tb.Enqueue(t, gitlab.JobSpec{Name: "target", Script: []string{"echo target-ready", "sleep 60"}})
			tb.WaitTrace(ctx, t, target, "target-ready")
			addr, err := tb.Host.GuestAddr(ctx, tb.JobVM(ctx, t, target))
			require.NoError(t, err)

			probe := func(what, host, port string) string {
				return "if timeout 3 bash -c '</dev/tcp/" + host + "/" + port + "'; then echo " + what + "=open; else echo " + what + "=closed; fi"
			}
			prober := tb.Enqueue(t, gitlab.JobSpec{Name: "prober", Script: []string{
				probe("peer", addr.String(), "22"),
				probe("host", u.Hostname(), u.Port()),
			}})
			rec := tb.Wait(ctx, t, prober)
			require.Equal(t, gitlab.StatusSuccess, rec.Status, rec.Trace)
			assert.Contains(t, rec.Trace, "host=open", "job VMs reach the host's services")
			if shared {
				assert.Contains(t, rec.Trace, "peer=open", "control: on a shared switch job VMs reach each other")
			} else {
				assert.Contains(t, rec.Trace, "peer=closed", "on a private switch a job VM cannot reach another's sshd")
			}
			// The target reached GitLab too: it cloned the project and
			// printed its marker. A forceful stop ends it at once.
			r.Signal(os.Interrupt)
			_ = r.Wait(ctx)
			if rec, _ := tb.GitLab.Job(target); rec.Status == gitlab.StatusSuccess {
				t.Errorf("the target job ended %s before it was aborted", rec.Status)
			}
			tb.WaitOnlyTemplates(ctx, t)
		})
	}
}
