package guestssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// lostGrace is how long Run waits, after a session ended without an exit
// status, for the transport to report whether the whole connection died.
// x/crypto closes the channels before it publishes the connection error, so
// without the wait a dropped connection would read as a bare session close.
const lostGrace = 200 * time.Millisecond

// Run executes one stage: command (the shell, e.g. "bash -l" or "sh") is
// started without a PTY and reads the stage script from stdin, which avoids
// argument length limits and quoting. stdout and stderr receive output as
// the channel delivers it; nothing is buffered whole, and nothing is written
// to them after Run returns. They are called from other goroutines and
// should not block for long: a stalled writer stalls the guest's output.
//
// The result is nil for exit status 0, *failure.ScriptError for any other
// exit status or a signal death, *LostError when the connection or session
// died without a status, and an error wrapping ctx's cause when ctx ended:
// the script then got TERM, and KILL after Config.KillGrace.
//
// If stdin blocks forever, x/crypto's goroutine copying it stays blocked in
// Read after Run returns; pass a reader that ends (a file, a string).
func (c *Client) Run(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := c.usable(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stage on %s not started: %w", c.addr, ctxError(ctx))
	}

	st := newStageRun(stdin, stdout, stderr)
	defer st.stdout.shut()
	defer st.stderr.shut()
	c.wg.Add(1)
	go c.runStage(st, command)

	var sess *ssh.Session
	for {
		select {
		case sess = <-st.started:
		case res := <-st.done:
			return c.classify(st, res)
		case <-ctx.Done():
			select {
			case res := <-st.done:
				// Finished in the same instant; the real result wins.
				return c.classify(st, res)
			default:
			}
			return c.cancel(ctx, st, sess)
		}
	}
}

func (c *Client) usable() error {
	c.mu.Lock()
	closed, lost := c.closed, c.lostWhy
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if lost != nil {
		return &LostError{Addr: c.addr, Reason: lost.Error(), Err: lost}
	}
	select {
	case <-c.connDone:
		return c.lost(nil)
	default:
	}
	return nil
}

// stageRun is one stage between Run and the goroutine that drives its
// session.
type stageRun struct {
	stdin          *trackedReader // nil when there is no stdin
	stdout, stderr *gate
	started        chan *ssh.Session // the session, once its command started
	done           chan stageResult

	mu        sync.Mutex
	abandoned bool
}

type stageResult struct {
	err     error
	started bool // the command ran; err came from Session.Wait
}

func newStageRun(stdin io.Reader, stdout, stderr io.Writer) *stageRun {
	st := &stageRun{
		stdout:  newGate(stdout),
		stderr:  newGate(stderr),
		started: make(chan *ssh.Session, 1),
		done:    make(chan stageResult, 1),
	}
	if stdin != nil {
		st.stdin = &trackedReader{r: stdin}
	}
	return st
}

// abandon marks the stage as given up by Run; it returns the session if the
// stage goroutine had already published it.
func (st *stageRun) abandon() *ssh.Session {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.abandoned = true
	select {
	case s := <-st.started:
		return s
	default:
		return nil
	}
}

// publish hands sess to Run unless Run has already given up on the stage.
func (st *stageRun) publish(sess *ssh.Session) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.abandoned {
		return false
	}
	st.started <- sess
	return true
}

// runStage opens and starts the session off Run's goroutine because opening
// a channel waits on the guest, and only ctx should decide how long Run
// waits.
func (c *Client) runStage(st *stageRun, command string) {
	defer c.wg.Done()
	sess, err := c.ssh.NewSession()
	if err != nil {
		st.done <- stageResult{err: fmt.Errorf("open session: %w", err)}
		return
	}
	if st.stdin != nil {
		sess.Stdin = st.stdin
	}
	sess.Stdout = st.stdout
	sess.Stderr = st.stderr
	if err := sess.Start(command); err != nil {
		sess.Close()
		st.done <- stageResult{err: fmt.Errorf("start %q: %w", command, err)}
		return
	}
	if !st.publish(sess) {
		sess.Signal(ssh.SIGKILL)
		sess.Close()
	}
	st.done <- stageResult{err: sess.Wait(), started: true}
}

// cancel stops a running stage the way a terminal user would: TERM so the
// script can clean up, then KILL. OpenSSH (7.9+) delivers both to the whole
// process group of the session. Older servers ignore signals; closing the
// session and, in the end, destroying the VM are the backstops.
func (c *Client) cancel(ctx context.Context, st *stageRun, sess *ssh.Session) error {
	cause := ctxError(ctx)
	grace := c.cfg.KillGrace
	if sess == nil {
		// The exec request is still in flight. A healthy sshd answers within
		// milliseconds, so wait (at most a grace period) rather than KILL a
		// script that never got its TERM.
		timer := time.NewTimer(grace)
		select {
		case sess = <-st.started:
		case <-st.done:
			timer.Stop()
			return fmt.Errorf("stage on %s cancelled: %w", c.addr, cause)
		case <-timer.C:
			// The stage goroutine kills the session if it ever starts.
			sess = st.abandon()
		}
		timer.Stop()
		if sess == nil {
			return fmt.Errorf("stage on %s cancelled before it started: %w", c.addr, cause)
		}
	}

	c.cfg.Logf("ssh %s: stage cancelled (%v): sending TERM, KILL in %s", c.addr, context.Cause(ctx), grace)
	if err := sess.Signal(ssh.SIGTERM); err != nil {
		// The channel is already gone; nothing left to stop.
		return fmt.Errorf("stage on %s cancelled (the session was already closing): %w", c.addr, cause)
	}

	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-st.done:
		return fmt.Errorf("stage on %s cancelled: the script ended after TERM: %w", c.addr, cause)
	case <-timer.C:
	}

	c.cfg.Logf("ssh %s: stage still running %s after TERM: sending KILL", c.addr, grace)
	sess.Signal(ssh.SIGKILL)
	sess.Close()
	return fmt.Errorf("stage on %s cancelled: still running %s after TERM, sent KILL: %w", c.addr, grace, cause)
}

// classify maps the end of a stage onto the failure vocabulary.
func (c *Client) classify(st *stageRun, res stageResult) error {
	if !res.started {
		// Opening or starting the session failed. If the connection is
		// gone, that is the real story.
		select {
		case <-c.connDone:
			return c.lost(res.err)
		default:
		}
		return fmt.Errorf("stage on %s: %w", c.addr, res.err)
	}
	// A script cut short is not the script's verdict, whatever it exited with.
	if err := st.stdin.failure(); err != nil {
		return fmt.Errorf("stage on %s: reading the stage script failed, the guest ran at most part of it: %w", c.addr, err)
	}
	if err := errors.Join(st.stdout.failure(), st.stderr.failure()); err != nil {
		return fmt.Errorf("stage on %s: writing the job output failed: %w", c.addr, err)
	}

	err := res.err
	if err == nil {
		return nil
	}
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		se := &failure.ScriptError{Code: exit.ExitStatus()}
		if sig := exit.Signal(); sig != "" {
			se.Signal = "SIG" + sig
		}
		return se
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return c.lostAfter(err)
	}
	// Session.Wait reports copy errors only after an exit status of 0, and
	// ours were ruled out above, so this is the guest closing stdin early: a
	// script that exited before its end. Its status stands.
	c.cfg.Logf("ssh %s: stage exited 0 before reading all of its stdin (%v)", c.addr, err)
	return nil
}

// lostAfter waits briefly for the transport to tell whether the connection
// died or only the session closed without a status.
func (c *Client) lostAfter(err error) error {
	t := time.NewTimer(lostGrace)
	defer t.Stop()
	select {
	case <-c.connDone:
		return c.lost(err)
	case <-t.C:
	}
	c.mu.Lock()
	lost := c.lostWhy
	c.mu.Unlock()
	if lost != nil {
		return &LostError{Addr: c.addr, Reason: lost.Error(), Err: errors.Join(lost, err)}
	}
	return &LostError{
		Addr:   c.addr,
		Reason: "the session closed without reporting an exit status (sshd or the shell died)",
		Err:    err,
	}
}

// lost builds the LostError for a connection that has ended; cause is what
// the session saw, if anything.
func (c *Client) lost(cause error) error {
	c.mu.Lock()
	why, connErr, closed := c.lostWhy, c.connErr, c.closed
	c.mu.Unlock()
	switch {
	case why != nil:
		return &LostError{Addr: c.addr, Reason: why.Error(), Err: errors.Join(why, cause)}
	case closed:
		return &LostError{Addr: c.addr, Reason: "the client was closed while the stage ran", Err: errors.Join(ErrClosed, cause)}
	default:
		reason := "the connection closed"
		if connErr != nil {
			reason = fmt.Sprintf("the connection closed: %v", connErr)
		}
		return &LostError{Addr: c.addr, Reason: reason, Err: errors.Join(connErr, cause)}
	}
}

// gate forwards writes until shut, then drops them. x/crypto's copy
// goroutines can outlive Run (a cancelled stage on an unresponsive guest),
// and the caller may close its job log as soon as Run returns. A failing
// writer is recorded and then bypassed the same way: if the copy stopped,
// the guest would block on a full window instead of finishing the stage.
type gate struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
	err    error
}

func newGate(w io.Writer) *gate {
	if w == nil {
		w = io.Discard
	}
	return &gate{w: w}
}

func (g *gate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.err != nil {
		return len(p), nil
	}
	if _, err := g.w.Write(p); err != nil {
		g.err = err
	}
	return len(p), nil
}

func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gate) failure() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// trackedReader remembers a read error on the stage script, which x/crypto
// would otherwise only pass on as a closed stdin: the shell would run the
// part it got.
type trackedReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		t.mu.Lock()
		if t.err == nil {
			t.err = err
		}
		t.mu.Unlock()
	}
	return n, err
}

func (t *trackedReader) failure() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}
