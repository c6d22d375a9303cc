package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"net/url"
	"os"
	"regexp"
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
	e := sideBySide(ctx, t, tb, executor+"/"+variant, "", fault)
	assert.False(t, e.gotSecret(), "the attacker received the victim's secret")
	assert.False(t, e.gotScript(), "the attacker received the victim's after_script")
	e.assertOwnVM(t)
	if defences() {
		t.Logf("%s/%s: stopped by the binding (permanent ARP entry, static bridge entry, private switch)", executor, variant)
		assert.Contains(t, e.rec.Trace, e.victimVM+" is bound to address "+e.addr.String()+", MAC "+e.mac)
	}
	assertUnbound(ctx, t, tb)
}

// evidence is what one attack left behind: the victim's job record and
// what each VM's sshd recorded of the sessions it accepted.
type evidence struct {
	rec            gitlab.JobRecord
	victimVM       string
	addr           netip.Addr
	mac            string
	stolen, own    string
	secret, canary string
}

func (e evidence) gotSecret() bool { return strings.Contains(e.stolen, e.secret) }
func (e evidence) gotScript() bool { return strings.Contains(e.stolen, e.canary) }

func (e evidence) log(t *testing.T, label string) {
	t.Helper()
	t.Logf("%s: attacker recorded %d session(s); victim's secret in them: %v, victim's after_script: %v; victim recorded its own after_script: %v",
		label, strings.Count(e.stolen, "=== session "), e.gotSecret(), e.gotScript(), strings.Contains(e.own, e.canary))
}

// assertOwnVM: the victim's stages ran in its own VM and succeeded.
func (e evidence) assertOwnVM(t *testing.T) {
	t.Helper()
	assert.True(t, strings.Contains(e.own, e.canary), "the victim's VM recorded its own after_script")
	assert.Equal(t, gitlab.StatusSuccess, e.rec.Status, "the victim's stages reach its own VM (failure reason %q)", e.rec.FailureReason)
	assert.True(t, strings.Contains(e.rec.Trace, e.canary+" host="+e.victimVM+" secret=[MASKED]"), "the victim's after_script ran on %s and its secret was masked", e.victimVM)
}

// sideBySide runs a victim job and an attacker job on tb's runner (image:
// the jobs' image, "" for the default template); once both run, the
// attacker's VM strikes with fault while the victim sleeps before its
// after_script (a new SSH session; under the Custom path a new connection).
// The runner is stopped forcefully when the victim ends.
func sideBySide(ctx context.Context, t *testing.T, tb *testbed.Testbed, label, image string, fault func(ip, mac string) sim.Fault) evidence {
	t.Helper()
	e := evidence{secret: "s3cret-" + randomHex(t), canary: "victim-canary-" + randomHex(t)}
	r := tb.Start(t, "run")

	start := time.Now()
	victim := tb.Enqueue(t, gitlab.JobSpec{
		Name:        "victim",
		Image:       image,
		Script:      []string{"echo victim-ready", "sleep 5"},
		AfterScript: []string{"echo " + e.canary + " host=$(hostname) secret=$VICTIM_SECRET"},
		Variables:   []gitlab.Variable{gitlab.MaskedVar("VICTIM_SECRET", e.secret)},
	})
	attacker := tb.Enqueue(t, gitlab.JobSpec{Name: "attacker", Image: image, Script: []string{"echo attacker-ready", "sleep 60"}})
	tb.WaitTrace(ctx, t, victim, "victim-ready")
	tb.WaitTrace(ctx, t, attacker, "attacker-ready")
	attackerVM := tb.JobVM(ctx, t, attacker)
	e.victimVM = tb.JobVM(ctx, t, victim)
	var err error
	e.mac, err = tb.Host.GuestMAC(e.victimVM)
	require.NoError(t, err)
	e.addr, err = tb.Host.GuestAddr(ctx, e.victimVM)
	require.NoError(t, err)

	require.NoError(t, tb.Host.SetFault(attackerVM, fault(e.addr.String(), e.mac)))
	t.Logf("%s: attack on %s (%s, %s) from %s %s after enqueue", label, e.victimVM, e.addr, e.mac, attackerVM, time.Since(start).Round(time.Millisecond))

	e.rec = tb.Wait(ctx, t, victim)
	t.Logf("%s: victim finished %s (%s) after %s", label, e.rec.Status, e.rec.FailureReason, time.Since(start).Round(time.Millisecond))
	stopAttacker(ctx, t, tb, r, attacker)

	e.stolen, err = tb.Host.SessionLog(attackerVM)
	require.NoError(t, err)
	e.own, err = tb.Host.SessionLog(e.victimVM)
	require.NoError(t, err)
	e.log(t, label)
	return e
}

// stopAttacker ends the runner forcefully: that aborts the attacker at
// once, where a cancel would wait for upstream's 30 s trace force-send to
// reach a silent job.
func stopAttacker(ctx context.Context, t *testing.T, tb *testbed.Testbed, r *testbed.Process, attacker int64) {
	t.Helper()
	r.Signal(os.Interrupt)
	_ = r.Wait(ctx)
	if rec, _ := tb.GitLab.Job(attacker); rec.Status == gitlab.StatusSuccess {
		t.Errorf("the attacker job was still to be aborted, but it ended %s", rec.Status)
	}
}

// assertUnbound: only templates are left, and no permanent ARP entry.
func assertUnbound(ctx context.Context, t *testing.T, tb *testbed.Testbed, templates ...string) {
	t.Helper()
	tb.WaitOnlyTemplates(ctx, t, templates...)
	arp, err := tb.Host.Command(ctx, tb.Host.ArpCommand(), "-an").CombinedOutput()
	require.NoError(t, err, "%s", arp)
	assert.NotContains(t, string(arp), "permanent", "destroying the VMs removed their ARP entries")
}

// The stolen template key against per-VM host keys, with the binding off
// (isolation = false, a shared switch) so that the takeover itself gets
// through: the attacker holds the key every clone of the template got, takes
// the victim's address and MAC, and the Custom path opens a new connection
// for the victim's after_script. On a template made by `template build`
// (cloud-init) with per-VM keys, that connection reaches the attacker, whose
// key is not the victim's pin: the attacker receives nothing and the
// victim's job fails closed. With host_keys = "template" (the control) every
// clone presents the template's key, so the attacker's verifies and it
// receives the victim's stage.
func TestIsolationStolenTemplateKeyVsPerVMHostKeys(t *testing.T) {
	t.Parallel()
	for _, row := range []struct {
		hostKeys string
		leaks    bool
	}{
		{"per-vm", false},
		{"auto", false},
		{"template", true},
	} {
		t.Run(row.hostKeys, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			const runner, tmpl = "iso", "fbsd"
			tb := testbed.New(t, testbed.Options{
				Runners: []string{runner},
				Sim:     sim.Options{SharedSwitch: true},
				Settings: []string{"isolation = false", `allowed_images = ["fbsd"]`, `snapshot = "latest"`,
					`ssh.user = "gitlab-runner"`, `host_keys = "` + row.hostKeys + `"`},
			})
			tb.TemplateBuild(ctx, t, runner, tmpl)
			require.NoError(t, tb.Host.SetFault(tmpl, sim.Fault{RecordSessions: true}))
			tb.Register(ctx, t, runner, "custom", append([]string{"--limit", "2"}, tb.CustomArgs(runner)...)...)
			tb.SetGlobal(t, "concurrent", "2")
			tb.SetGlobal(t, "check_interval", "1")

			label := "custom/stolen template key/host_keys=" + row.hostKeys
			e := sideBySide(ctx, t, tb, label, tmpl, func(ip, mac string) sim.Fault { return sim.Fault{StealMAC: mac, StealIP: ip} })
			if row.leaks {
				t.Logf("%s: nothing stops it without the binding: the attacker's key verifies as the template's", label)
				assert.True(t, e.gotScript(), "control: with the template's key the attacker receives the victim's after_script")
				assert.True(t, e.gotSecret(), "control: ... and its secret")
				assert.Contains(t, e.rec.Trace, `(host_keys = "template")`)
			} else {
				t.Logf("%s: stopped by the per-VM host key: the attacker's key is not the victim's pin", label)
				assert.False(t, e.gotSecret(), "the attacker received the victim's secret")
				assert.False(t, e.gotScript(), "the attacker received the victim's after_script")
				assert.Contains(t, e.rec.Trace, "Host key: per-VM ssh-ed25519")
				// Fail closed: the after_script ran nowhere. Upstream
				// ignores an after_script failure ("after_script failed,
				// but job will continue unaffected"), so the job's status
				// stays that of its script.
				assert.NotContains(t, e.own, e.canary, "the victim's after_script did not reach its own VM either")
				assert.NotContains(t, e.rec.Trace, e.canary+" host=", "the victim's after_script ran nowhere")
				t.Logf("%s: victim ended %s; its after_script was refused (upstream does not fail a job for after_script)", label, e.rec.Status)
			}
			assertUnbound(ctx, t, tb, tb.Host.Template(), tmpl)
		})
	}
}

// An attacker that is already running answers for the address the next job
// VM will get (Kea hands out addresses in order) before the victim job is
// even enqueued, and has made the host learn that address at its own MAC.
// The native executor's first connection, the one it keeps for the whole
// job, would then reach the attacker. The binding comes after the lease
// lookup and before that first connection: `arp -S` replaces the
// attacker's entry with the victim's permanent one, so the victim's
// stages reach its own VM. Without the defences they reach the attacker
// or fail.
func TestIsolationAttackerClaimsTheNextAddress(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tb := isolationTestbed(t, ctx, "bhyve")
	secret, canary := "s3cret-"+randomHex(t), "victim-canary-"+randomHex(t)
	r := tb.Start(t, "run")

	attacker := tb.Enqueue(t, gitlab.JobSpec{Name: "attacker", Script: []string{"echo attacker-ready", "sleep 60"}})
	tb.WaitTrace(ctx, t, attacker, "attacker-ready")
	attackerVM := tb.JobVM(ctx, t, attacker)
	own, err := tb.Host.GuestAddr(ctx, attackerVM)
	require.NoError(t, err)
	attackerMAC, err := tb.Host.GuestMAC(attackerVM)
	require.NoError(t, err)
	next := own.Next()
	require.NoError(t, tb.Host.SetFault(attackerVM, sim.Fault{StealIP: next.String()}))
	arpCtx, arpCancel := context.WithTimeout(ctx, 5*time.Second)
	stale := tb.WaitArpEntry(arpCtx, t, next, attackerMAC)
	arpCancel()
	t.Logf("attacker %s (%s) claims %s before the victim exists; host: %s", attackerVM, own, next, stale)

	start := time.Now()
	victim := tb.Enqueue(t, gitlab.JobSpec{
		Name:        "victim",
		Script:      []string{"echo " + canary + "-script host=$(hostname) secret=$VICTIM_SECRET"},
		AfterScript: []string{"echo " + canary + " host=$(hostname) secret=$VICTIM_SECRET"},
		Variables:   []gitlab.Variable{gitlab.MaskedVar("VICTIM_SECRET", secret)},
	})
	rec := tb.Wait(ctx, t, victim)
	t.Logf("native/next address: victim finished %s (%s) after %s", rec.Status, rec.FailureReason, time.Since(start).Round(time.Millisecond))
	stopAttacker(ctx, t, tb, r, attacker)

	// The victim's VM was destroyed with its job; its name and address
	// are in the trace.
	m := regexp.MustCompile(`([a-z0-9-]+) has address ([0-9.]+) \(`).FindStringSubmatch(testbed.Plain(rec.Trace))
	require.Len(t, m, 3, "the victim's trace names its VM and address:\n%s", testbed.Plain(rec.Trace))
	victimVM := m[1]
	require.Equal(t, next.String(), m[2], "the attacker claimed the address the victim's VM got")

	stolen, err := tb.Host.SessionLog(attackerVM)
	require.NoError(t, err)
	ownLog, err := tb.Host.SessionLog(victimVM)
	require.NoError(t, err)
	t.Logf("native/next address: attacker recorded %d session(s); victim's secret in them: %v, victim's script: %v; victim recorded %d session(s)",
		strings.Count(stolen, "=== session "), strings.Contains(stolen, secret), strings.Contains(stolen, canary), strings.Count(ownLog, "=== session "))
	assert.NotContains(t, stolen, secret, "the attacker received the victim's secret")
	assert.NotContains(t, stolen, canary, "the attacker received the victim's script")
	assert.Equal(t, gitlab.StatusSuccess, rec.Status, "the victim's stages reach its own VM (failure reason %q)", rec.FailureReason)
	assert.Contains(t, rec.Trace, canary+"-script host="+victimVM+" secret=[MASKED]", "the victim's script ran on its own VM")
	assert.Contains(t, rec.Trace, canary+" host="+victimVM+" secret=[MASKED]", "the victim's after_script ran on its own VM")
	if defences() {
		t.Logf("native/next address: stopped by the binding: arp -S replaced the attacker's entry before the first connection")
		assert.Contains(t, rec.Trace, victimVM+" is bound to address "+next.String())
	}
	assertUnbound(ctx, t, tb)
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
