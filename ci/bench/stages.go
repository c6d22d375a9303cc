package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// Row 2: the cost of one stage of a 10-stage job whose stages do nothing.
const (
	stagesPerJob = 10
	stagesReps   = 5
)

// stageNames are the stages gitlab-runner runs for a job with caches and
// artifacts, as the Custom executor passes them to `run`.
var stageNames = [stagesPerJob]string{
	"prepare_script", "get_sources", "restore_cache", "download_artifacts", "step_script",
	"after_script", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables", "step_release",
}

// sharedVM is one job VM, created once and used by rows 2 and 4. It is
// destroyed by teardown (and by the host's teardown in any case).
func (b *bench) sharedVM() (*jobvm.VM, error) {
	if b.vm != nil {
		return b.vm, nil
	}
	s, err := b.loadSettings()
	if err != nil {
		return nil, err
	}
	vm, err := b.host.Manager(s, "", "").Create(b.ctx, jobvm.Job{ID: b.nextJob()}, b.debugf)
	if err != nil {
		return nil, fmt.Errorf("create the shared job VM: %w", err)
	}
	b.vm = vm
	return vm, nil
}

// sshArgs is the OpenSSH command line to the guest that the baselines use.
func (b *bench) sshArgs(ip string, remote string) []string {
	return []string{"ssh", "-i", b.h.SSHKeyPath(),
		"-o", "UserKnownHostsFile=" + b.h.KnownHostsPath(), "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", b.h.SSHUser() + "@" + ip, remote}
}

func stagesRow(b *bench) ([]row, []target, error) {
	ctx := b.ctx
	vm, err := b.sharedVM()
	if err != nil {
		return nil, nil, err
	}
	ip := vm.Address.IP.String()

	// One job directory for bhyve-executor, as gitlab-runner's Custom
	// executor leaves it after prepare: TMPDIR with the state file.
	jobDir := filepath.Join(b.tmp, "custom-job")
	if err := os.MkdirAll(jobDir, 0o700); err != nil {
		return nil, nil, err
	}
	state, err := json.Marshal(map[string]string{"vm": vm.Name, "template": vm.Template, "address": ip, "mac": vm.MAC.String()})
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(jobDir, "bhyve-executor-state.json"), state, 0o600); err != nil {
		return nil, nil, err
	}
	script := filepath.Join(jobDir, "script")
	if err := os.WriteFile(script, []byte("true\n"), 0o700); err != nil {
		return nil, nil, err
	}
	execEnv := append(os.Environ(), "TMPDIR="+jobDir, "BHYVE_EXECUTOR_CONFIG="+b.settings, "BHYVE_EXECUTOR_RUNNER="+fixture.Runner,
		"BUILD_FAILURE_EXIT_CODE=1", "SYSTEM_FAILURE_EXIT_CODE=2", "BUILD_EXIT_CODE_FILE="+filepath.Join(jobDir, "exit-code"))

	// spawn runs a process in the host's namespace with the script on stdin.
	spawn := func(argv []string, env []string, stdin bool) error {
		cmd := b.nsCommand(ctx, argv...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if stdin {
			f, err := os.Open(script)
			if err != nil {
				return err
			}
			defer f.Close()
			cmd.Stdin = f
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}

	contenders := []struct {
		name  string
		stage func(i int) error
		per   []time.Duration
	}{
		{name: "reused connection", stage: func(int) error {
			var stderr bytes.Buffer
			if err := vm.Run(ctx, strings.NewReader("true\n"), io.Discard, &stderr); err != nil {
				return fmt.Errorf("%w: %s", err, stderr.String())
			}
			return nil
		}},
		{name: "fresh ssh", stage: func(int) error {
			return spawn(b.sshArgs(ip, "bash -l"), os.Environ(), true)
		}},
		{name: "bhyve-executor run", stage: func(i int) error {
			return spawn([]string{b.executor, "run", script, stageNames[i]}, execEnv, false)
		}},
		// OpenSSH's default key exchange, sntrup761x25519, is slow to
		// compute; the same ssh with plain curve25519 shows how much of the
		// baseline that is.
		{name: "fresh ssh, curve25519", stage: func(int) error {
			return spawn(append([]string{"ssh", "-o", "KexAlgorithms=curve25519-sha256"}, b.sshArgs(ip, "bash -l")[1:]...), os.Environ(), true)
		}},
		// What `ip netns exec` alone costs per spawn: the simulator's, not
		// the product's (on FreeBSD, ssh and bhyve-executor start directly).
		{name: "ip netns exec true", stage: func(int) error {
			return spawn([]string{"true"}, os.Environ(), false)
		}},
	}
	for rep := range stagesReps {
		for k := range contenders {
			c := &contenders[(k+rep)%len(contenders)]
			t0 := time.Now()
			for i := range stagesPerJob {
				if err := c.stage(i); err != nil {
					return nil, nil, fmt.Errorf("%s, stage %d: %w", c.name, i+1, err)
				}
			}
			c.per = append(c.per, time.Since(t0)/stagesPerJob)
		}
		b.progress("row 2: %d/%d: per stage: reused %s, fresh ssh %s, bhyve-executor %s, ssh+curve25519 %s, ip netns exec %s", rep+1, stagesReps,
			fmtDur(d2s(contenders[0].per[rep])), fmtDur(d2s(contenders[1].per[rep])),
			fmtDur(d2s(contenders[2].per[rep])), fmtDur(d2s(contenders[3].per[rep])), fmtDur(d2s(contenders[4].per[rep])))
	}

	reused := summarize(seconds(contenders[0].per))
	spawnCost := summarize(seconds(contenders[4].per)).Median
	net := func(ds []time.Duration) summary {
		xs := seconds(ds)
		for i := range xs {
			xs[i] -= spawnCost
		}
		return summarize(xs)
	}
	sshRaw := summarize(seconds(contenders[1].per))
	sshNet := net(contenders[1].per)
	exe := net(contenders[2].per)
	curve := net(contenders[3].per)
	n := fmt.Sprintf("%dx%d", stagesReps, stagesPerJob)
	sshOverReused := sshNet.Median / reused.Median
	rows := []row{
		{ID: "2a", What: "per stage: reused connection vs fresh `ssh` per stage", Ours: spread(reused, fmtDur), Base: spread(sshNet, fmtDur),
			Ratio: "ssh/ours=" + fmtRatio(sshOverReused), N: n,
			Note: fmt.Sprintf("stage script `true` piped to `bash -l`; ssh net of `ip netns exec` (%s per spawn, a simulator cost; raw ssh %s, raw ratio %s);\n"+
				"OpenSSH's default kex sntrup761x25519 is part of it: ssh -o KexAlgorithms=curve25519-sha256 takes %s (ratio %s)",
				fmtDur(spawnCost), fmtDur(sshRaw.Median), fmtRatio(sshRaw.Median/reused.Median), fmtDur(curve.Median), fmtRatio(curve.Median/reused.Median))},
		{ID: "2b", What: "per stage (info): `bhyve-executor run` process per stage vs fresh `ssh`", Ours: spread(exe, fmtDur), Base: spread(sshNet, fmtDur),
			Ratio: "ssh/executor=" + fmtRatio(sshNet.Median/exe.Median), N: n,
			Note: "bhyve-executor today: a new process and a new Go SSH connection (Attach) per stage, net of `ip netns exec`"},
		{ID: "2c", What: "per stage (info): `bhyve-executor run` per stage vs reused connection", Ours: spread(reused, fmtDur), Base: spread(exe, fmtDur),
			Ratio: "executor/reused=" + fmtRatio(exe.Median/reused.Median), N: n,
			Note: fmt.Sprintf("what a connection kept across stages would save bhyve-executor: %s per stage, %s per 10-stage job",
				fmtDur(exe.Median-reused.Median), fmtDur(10*(exe.Median-reused.Median)))},
	}
	return rows, []target{atLeast("per_stage_overhead_vs_fresh_ssh", sshOverReused, 10)}, nil
}

// closeSharedVM destroys the shared VM.
func (b *bench) closeSharedVM() error {
	if b.vm == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := b.vm.Close(ctx)
	b.vm = nil
	return err
}
