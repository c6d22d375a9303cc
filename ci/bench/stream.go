package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/settings"
)

// Row 4: streaming a stage's output from the guest into the log.
const (
	streamBig   = 1 << 30  // 1 GiB
	streamSmall = 64 << 20 // 64 MiB
	streamReps  = 7
	controlReps = 5 // of the x/crypto-only control (rows 4d, 4e)
)

// streamChildCommand is the hidden subcommand the bench re-executes itself
// with, so that our side's memory is measured in a process of its own.
const streamChildCommand = "__stream-child"

// streamResult is what the child reports on stdout.
type streamResult struct {
	Bytes   int64   `json:"bytes"`
	Connect float64 `json:"connect_seconds"`
	Run     float64 `json:"run_seconds"`
	VmHWM   int64   `json:"vmhwm_bytes"`
	// Go's view, for explaining VmHWM: the most heap the runtime held from
	// the OS, and how many GC cycles ran.
	HeapSys uint64 `json:"heap_sys_bytes"`
	NumGC   uint32 `json:"num_gc"`
	BaseRSS int64  `json:"base_rss_bytes"` // VmRSS after Attach, before the stage
}

// counter is the log writer of the streaming child: it counts and drops.
type counter struct{ n atomic.Int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// streamChild runs in the simulated host's network namespace: it attaches
// to the job VM exactly as a later stage of bhyve-executor does and runs a
// stage that writes -bytes bytes to stdout, into a counting writer.
func streamChild(args []string) int {
	fs := flag.NewFlagSet(streamChildCommand, flag.ContinueOnError)
	settingsPath := fs.String("settings", "", "bhyve.toml")
	name := fs.String("vm", "", "job VM name")
	addr := fs.String("addr", "", "job VM address")
	n := fs.Int64("bytes", 0, "bytes the stage writes")
	bare := fs.Bool("xcrypto", false, "control: a plain x/crypto/ssh session instead of jobvm")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := runStreamChild
	if *bare {
		run = runStreamControl
	}
	res, err := run(ctx, *settingsPath, *name, *addr, *n)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", streamChildCommand, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

func runStreamChild(ctx context.Context, settingsPath, name, addr string, n int64) (streamResult, error) {
	var res streamResult
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return res, err
	}
	s, err := settings.Load(settingsPath, fixture.Runner)
	if err != nil {
		return res, err
	}
	host, err := jobvm.NewHost(os.Getpid(), true)
	if err != nil {
		return res, err
	}
	// No Dialer: this process is inside the host's namespace already.
	t0 := time.Now()
	vm, err := host.Manager(s, "", "").Attach(ctx, name, ip)
	if err != nil {
		return res, err
	}
	defer vm.Detach()
	t1 := time.Now()
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		res.BaseRSS, _ = parseStatusKB(string(status), "VmRSS")
	}
	out := &counter{}
	var stderr bytes.Buffer
	if err := vm.Run(ctx, strings.NewReader(fmt.Sprintf("head -c %d /dev/zero\n", n)), out, &stderr); err != nil {
		return res, fmt.Errorf("%w: %s", err, stderr.String())
	}
	t2 := time.Now()
	if err := vm.Detach(); err != nil {
		return res, err
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return res, err
	}
	if res.VmHWM, err = parseStatusKB(string(status), "VmHWM"); err != nil {
		return res, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapSys, res.NumGC = ms.HeapSys, ms.NumGC
	res.Bytes = out.n.Load()
	res.Connect = t1.Sub(t0).Seconds()
	res.Run = t2.Sub(t1).Seconds()
	if res.Bytes != n {
		return res, fmt.Errorf("the log received %d bytes, want %d", res.Bytes, n)
	}
	return res, nil
}

// runStreamControl streams like runStreamChild with nothing of ours in the
// path: x/crypto/ssh's client, a session running the command, its stdout
// into the counting writer. It tells our code's memory from x/crypto's.
func runStreamControl(ctx context.Context, settingsPath, _, addr string, n int64) (streamResult, error) {
	var res streamResult
	s, err := settings.Load(settingsPath, fixture.Runner)
	if err != nil {
		return res, err
	}
	signers, err := s.Signers()
	if err != nil {
		return res, err
	}
	keys, err := s.HostKeysFor(s.Template)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	client, err := ssh.Dial("tcp", net.JoinHostPort(addr, strconv.Itoa(s.SSH.Port)), &ssh.ClientConfig{
		User: s.SSH.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: ssh.FixedHostKey(keys[0]), HostKeyAlgorithms: []string{keys[0].Type()},
	})
	if err != nil {
		return res, err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return res, err
	}
	t1 := time.Now()
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		res.BaseRSS, _ = parseStatusKB(string(status), "VmRSS")
	}
	out := &counter{}
	sess.Stdout = out
	if err := sess.Run(fmt.Sprintf("head -c %d /dev/zero", n)); err != nil {
		return res, err
	}
	t2 := time.Now()
	client.Close()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return res, err
	}
	if res.VmHWM, err = parseStatusKB(string(status), "VmHWM"); err != nil {
		return res, err
	}
	res.Bytes, res.Connect, res.Run = out.n.Load(), t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds()
	if res.Bytes != n {
		return res, fmt.Errorf("the writer received %d bytes, want %d", res.Bytes, n)
	}
	return res, ctx.Err()
}

// timedNS runs argv in the host's namespace under GNU time, which forks it
// and reports its maximum resident set from wait4's rusage. (Go starts
// children with vfork, and Linux carries the parent's peak RSS into the
// maxrss of a vforked child at exec, so rusage of our own children would
// report this whole bench's peak instead of theirs.)
func (b *bench) timedNS(ctx context.Context, stdout *os.File, out *bytes.Buffer, argv ...string) (wall time.Duration, maxRSS int64, err error) {
	tf := filepath.Join(b.tmp, "time.out")
	args := append([]string{"-o", tf, "-f", "%M", "ip", "netns", "exec", b.h.NetNS()}, argv...)
	cmd := exec.CommandContext(ctx, "/usr/bin/time", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if stdout != nil {
		cmd.Stdout = stdout
	} else {
		cmd.Stdout = out
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err = cmd.Run()
	if b.verbose && stderr.Len() > 0 {
		b.debugf("%s: stderr:\n%s", argv[0], stderr.String())
	}
	wall = time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	data, err := os.ReadFile(tf)
	if err != nil {
		return 0, 0, err
	}
	maxRSS, err = parseTimeMaxRSS(string(data))
	return wall, maxRSS, err
}

type streamRun struct {
	wall   time.Duration
	maxRSS int64
	child  streamResult // ours only
}

func streamRow(b *bench) ([]row, []target, error) {
	ctx := b.ctx
	vm, err := b.sharedVM()
	if err != nil {
		return nil, nil, err
	}
	ip := vm.Address.IP.String()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	defer devnull.Close()

	child := func(n int64, extra ...string) (streamRun, error) {
		var out bytes.Buffer
		argv := append([]string{b.self, streamChildCommand,
			"-settings", b.settings, "-vm", vm.Name, "-addr", ip, "-bytes", strconv.FormatInt(n, 10)}, extra...)
		wall, rss, err := b.timedNS(ctx, nil, &out, argv...)
		if err != nil {
			return streamRun{}, err
		}
		r := streamRun{wall: wall, maxRSS: rss}
		if err := json.Unmarshal(out.Bytes(), &r.child); err != nil {
			return streamRun{}, fmt.Errorf("streaming child said %q: %w", out.String(), err)
		}
		if r.child.Bytes != n {
			return streamRun{}, fmt.Errorf("streaming child received %d bytes, want %d", r.child.Bytes, n)
		}
		return r, nil
	}
	ours := func(n int64) (streamRun, error) { return child(n) }
	control := func(n int64) (streamRun, error) { return child(n, "-xcrypto") }
	theirs := func(n int64) (streamRun, error) {
		wall, rss, err := b.timedNS(ctx, devnull, nil, b.sshArgs(ip, fmt.Sprintf("head -c %d /dev/zero", n))...)
		return streamRun{wall: wall, maxRSS: rss}, err
	}

	runs := map[string]map[int64][]streamRun{"ours": {}, "ssh": {}, "x/crypto": {}}
	sides := map[string]func(int64) (streamRun, error){"ours": ours, "ssh": theirs, "x/crypto": control}
	for rep := range streamReps {
		order := []string{"ours", "ssh", "x/crypto"}
		if rep%2 == 1 {
			order = []string{"ssh", "ours", "x/crypto"}
		}
		if rep >= controlReps {
			order = order[:2]
		}
		for _, n := range []int64{streamBig, streamSmall} {
			for _, side := range order {
				r, err := sides[side](n)
				if err != nil {
					return nil, nil, fmt.Errorf("%s streaming %s: %w", side, fmtBytes(float64(n)), err)
				}
				runs[side][n] = append(runs[side][n], r)
			}
		}
		ob, os := runs["ours"][streamBig][rep].child, runs["ours"][streamSmall][rep].child
		b.debugf("ours 1GiB: base RSS %s, VmHWM %s, heap sys %s, %d GCs; 64MiB: base %s, VmHWM %s, heap sys %s, %d GCs",
			fmtBytes(float64(ob.BaseRSS)), fmtBytes(float64(ob.VmHWM)), fmtBytes(float64(ob.HeapSys)), ob.NumGC,
			fmtBytes(float64(os.BaseRSS)), fmtBytes(float64(os.VmHWM)), fmtBytes(float64(os.HeapSys)), os.NumGC)
		b.progress("row 4: %d/%d: 1GiB: ours %s (%s peak), ssh %s (%s peak)", rep+1, streamReps,
			fmtDur(d2s(runs["ours"][streamBig][rep].wall)), fmtBytes(float64(runs["ours"][streamBig][rep].child.VmHWM)),
			fmtDur(d2s(runs["ssh"][streamBig][rep].wall)), fmtBytes(float64(runs["ssh"][streamBig][rep].maxRSS)))
	}

	walls := func(side string, n int64) summary {
		var ds []time.Duration
		for _, r := range runs[side][n] {
			ds = append(ds, r.wall)
		}
		return summarize(seconds(ds))
	}
	// Marginal throughput: the extra bytes over the extra time between the
	// two sizes, so that process start, SSH handshake and session setup
	// (measured in rows 1 and 2) do not count as streaming on either side.
	marginal := func(side string) float64 {
		return float64(streamBig-streamSmall) / (walls(side, streamBig).Median - walls(side, streamSmall).Median)
	}
	endToEnd := func(side string) summary {
		s := walls(side, streamBig)
		return summary{N: s.N, Median: streamBig / s.Median, Lo: streamBig / s.Hi, Hi: streamBig / s.Lo}
	}
	rss := func(side string, n int64, hwm bool) summary {
		if len(runs[side][n]) == 0 {
			return summarize(nil)
		}
		var xs []float64
		for _, r := range runs[side][n] {
			v := r.maxRSS
			if hwm {
				v = r.child.VmHWM
			}
			xs = append(xs, float64(v))
		}
		return summarize(xs)
	}
	// childStat summarises a figure the streaming child reported at 1 GiB.
	childStat := func(side string, f func(streamResult) float64) summary {
		var xs []float64
		for _, r := range runs[side][streamBig] {
			xs = append(xs, f(r.child))
		}
		return summarize(xs)
	}
	baseRSS := func(r streamResult) float64 { return float64(r.BaseRSS) }
	growth := func(r streamResult) float64 { return float64(r.VmHWM - r.BaseRSS) }
	var inChild []float64
	for _, r := range runs["ours"][streamBig] {
		inChild = append(inChild, float64(streamBig)/r.child.Run)
	}
	oursRate, sshRate := marginal("ours"), marginal("ssh")
	if oursRate <= 0 || sshRate <= 0 {
		return nil, nil, errors.New("streaming 1GiB took no longer than 64MiB: the measurement is noise")
	}
	oursBig, oursSmall := rss("ours", streamBig, true), rss("ours", streamSmall, true)
	sshBig := rss("ssh", streamBig, false)
	flat := oursBig.Median / oursSmall.Median
	ctlBig, ctlSmall := rss("x/crypto", streamBig, true), rss("x/crypto", streamSmall, true)
	n := fmt.Sprint(streamReps)
	rows := []row{
		{ID: "4a", What: "stream 1GiB into the log: our VM.Run vs `ssh ... head -c 1GiB >/dev/null`",
			Ours: fmtRate(oursRate), Base: fmtRate(sshRate), Ratio: "ours/ssh=" + fmtRatio(oursRate/sshRate), N: n,
			Note: fmt.Sprintf("marginal rate (1GiB-64MiB)/(wall 1GiB - wall 64MiB); end to end incl. start+connect: ours %s, ssh %s; our rate inside the child, Run only: %s",
				spread(endToEnd("ours"), fmtRate), spread(endToEnd("ssh"), fmtRate), spread(summarize(inChild), fmtRate))},
		{ID: "4b", What: "stream 1GiB (info): peak RSS, our child vs ssh", Ours: spread(oursBig, fmtBytes), Base: spread(sshBig, fmtBytes),
			Ratio: "ours/ssh=" + fmtRatio(oursBig.Median/sshBig.Median), N: n,
			Note: fmt.Sprintf("ours: VmHWM of the streaming child (the whole bench binary, Go runtime included; GNU time maxrss %s); ssh: maxrss via GNU time",
				fmtBytes(rss("ours", streamBig, false).Median))},
		{ID: "4c", What: "stream (info): our peak RSS at 1GiB vs at 64MiB (flat = 1.0x)", Ours: spread(oursBig, fmtBytes), Base: spread(oursSmall, fmtBytes),
			Ratio: "1GiB/64MiB=" + fmtRatio(flat), N: n},
		{ID: "4d", What: "stream (info, control): plain x/crypto/ssh session, peak RSS at 1GiB vs 64MiB",
			Ours: spread(ctlBig, fmtBytes), Base: spread(ctlSmall, fmtBytes), Ratio: "1GiB/64MiB=" + fmtRatio(ctlBig.Median/ctlSmall.Median), N: fmt.Sprint(controlReps),
			Note: fmt.Sprintf("same child, no guestssh/jobvm: ssh.Dial + Session.Run into the counting writer (marginal rate %s); "+
				"if this grows like 4c, the growth is x/crypto + Go's GC, not our code", fmtRate(marginal("x/crypto")))},
		{ID: "4e", What: "stream 1GiB: our peak RSS vs the plain x/crypto/ssh control's", Ours: spread(oursBig, fmtBytes), Base: spread(ctlBig, fmtBytes),
			Ratio: "ours/x-crypto=" + fmtRatio(oursBig.Median/ctlBig.Median), N: fmt.Sprintf("%d/%d", oursBig.N, ctlBig.N),
			Note: fmt.Sprintf("what guestssh and jobvm add to the peak over x/crypto's own per-packet allocation; split at 1GiB into RSS once connected, before the stage "+
				"(ours %s, x/crypto %s) and the peak's growth while streaming (ours %s, x/crypto %s)",
				fmtBytes(childStat("ours", baseRSS).Median), fmtBytes(childStat("x/crypto", baseRSS).Median),
				fmtBytes(childStat("ours", growth).Median), fmtBytes(childStat("x/crypto", growth).Median))},
	}
	return rows, []target{
		atLeast("streaming_throughput_vs_ssh", oursRate/sshRate, 0.8),
		atMost("streaming_memory_vs_xcrypto_control", oursBig.Median/ctlBig.Median, 1.1),
	}, nil
}
