package vmbhyve

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeResult is one canned answer: what vm-bhyve printed and its exit status.
type fakeResult struct {
	stdout, stderr string
	code           int
	err            error // returned instead, e.g. a start failure
}

// exitStatus stands in for *exec.ExitError.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitStatus) ExitCode() int { return int(e) }

// fakeCmd is a hand-written Commander that records every argv and answers
// from a handler, in the spirit of packer-plugin-qemu's driver_mock.
type fakeCmd struct {
	mu     sync.Mutex
	calls  [][]string
	handle func(argv []string) fakeResult
}

func (f *fakeCmd) Run(ctx context.Context, argv []string) ([]byte, []byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(argv))
	handle := f.handle
	f.mu.Unlock()
	r := handle(argv)
	if r.err != nil {
		return []byte(r.stdout), []byte(r.stderr), r.err
	}
	if r.code != 0 {
		return []byte(r.stdout), []byte(r.stderr), exitStatus(r.code)
	}
	return []byte(r.stdout), []byte(r.stderr), nil
}

func (f *fakeCmd) Calls() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// subcommands lists the vm subcommand (or "sysrc") of every call, in order.
func (f *fakeCmd) subcommands() []string {
	var out []string
	for _, argv := range f.Calls() {
		out = append(out, subcommand(argv))
	}
	return out
}

func subcommand(argv []string) string {
	for i, a := range argv {
		if strings.HasSuffix(a, "/vm") && i+1 < len(argv) {
			return argv[i+1]
		}
		if strings.HasSuffix(a, "/sysrc") {
			return "sysrc"
		}
	}
	return "?"
}

// script answers each subcommand from its own queue; the last answer of a
// queue repeats. A subcommand with no queue fails the test.
func script(t *testing.T, answers map[string][]fakeResult) func([]string) fakeResult {
	var mu sync.Mutex
	return func(argv []string) fakeResult {
		mu.Lock()
		defer mu.Unlock()
		sub := subcommand(argv)
		q, ok := answers[sub]
		if !ok || len(q) == 0 {
			t.Errorf("unexpected command %q", argv)
			return fakeResult{code: 1, stderr: "unexpected"}
		}
		r := q[0]
		if len(q) > 1 {
			answers[sub] = q[1:]
		}
		return r
	}
}

const vmPath = "/usr/local/sbin/vm"

// newDriver is a Driver as the runner configures it on a host with sudo.
func newDriver(t *testing.T, handle func([]string) fakeResult) (*Driver, *fakeCmd) {
	t.Helper()
	fake := &fakeCmd{handle: handle}
	return &Driver{
		VM:           []string{vmPath},
		Sysrc:        []string{"/usr/sbin/sysrc"},
		Privilege:    []string{"sudo", "-n"},
		VMDir:        t.TempDir(),
		Cmd:          fake,
		PollInterval: 5 * 1e6, // 5ms
	}, fake
}

// listing renders a 1.6-style `vm list` with the given "^"-separated rows.
func listing(rows ...string) fakeResult {
	return fakeResult{stdout: bsdColumn(append([]string{header16}, rows...))}
}

func row(name, state string) string {
	return name + "^default^bhyveload^2^4G^-^No^" + state
}

// vmErr is util::err's output: "$0: ERROR: msg" on stderr, exit 1.
func vmErr(msg string) fakeResult {
	return fakeResult{stderr: vmPath + ": ERROR: " + msg + "\n", code: 1}
}

// vmWarnExit is vm::confirm_stopped's refusal: a WARNING, then exit 1.
func vmWarnExit(msg string) fakeResult {
	return fakeResult{stderr: vmPath + ": WARNING: " + msg + "\n", code: 1}
}
