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

	out, errOut := newGate(stdout), newGate(stderr)
	defer out.shut()
	defer errOut.shut()

	st := &stageRun{started: make(chan *ssh.Session, 1), done: make(chan error, 1)}
	c.wg.Add(1)
	go c.runStage(st, command, stdin, out, errOut)

	var sess *ssh.Session
	for {
		select {
		case sess = <-st.started:
		case err := <-st.done:
			return c.classify(err)
		case <-ctx.Done():
			select {
			case err := <-st.done:
				// Finished in the same instant; the real result wins.
				return c.classify(err)
			default:
			}
			if sess == nil {
				sess = st.abandon()
			}
			if sess == nil {
				// Opening or starting the session was still in flight: the
				// stage goroutine kills it if it ever starts.
				return fmt.Errorf("stage on %s cancelled before it started: %w", c.addr, ctxError(ctx))
			}
			return c.cancel(ctx, sess, st.done)
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

// stageRun hands the session from the goroutine that opens it to Run, and
// settles who kills it when ctx ends before it was handed over.
type stageRun struct {
	started chan *ssh.Session
	done    chan error

	mu        sync.Mutex
	abandoned bool
}

// abandon marks the stage as cancelled; it returns the session if the stage
// goroutine had already published it.
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
func (c *Client) runStage(st *stageRun, command string, stdin io.Reader, stdout, stderr io.Writer) {
	defer c.wg.Done()
	sess, err := c.ssh.NewSession()
	if err != nil {
		st.done <- fmt.Errorf("open session: %w", err)
		return
	}
	sess.Stdin = stdin
	sess.Stdout = stdout
	sess.Stderr = stderr
	if err := sess.Start(command); err != nil {
		sess.Close()
		st.done <- fmt.Errorf("start %q: %w", command, err)
		return
	}
	if !st.publish(sess) {
		sess.Signal(ssh.SIGKILL)
		sess.Close()
	}
	st.done <- sess.Wait()
}

// cancel stops a running stage the way a terminal user would: TERM so the
// script can clean up, then KILL. OpenSSH (7.9+) delivers both to the whole
// process group of the session. Older servers ignore signals; closing the
// session and, in the end, destroying the VM are the backstops.
func (c *Client) cancel(ctx context.Context, sess *ssh.Session, done <-chan error) error {
	cause := ctxError(ctx)
	grace := c.cfg.KillGrace
	c.cfg.Logf("ssh %s: stage cancelled (%v): sending TERM, KILL in %s", c.addr, context.Cause(ctx), grace)
	if err := sess.Signal(ssh.SIGTERM); err != nil {
		// The channel is already gone; nothing left to stop.
		return fmt.Errorf("stage on %s cancelled (the session was already closing): %w", c.addr, cause)
	}

	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return fmt.Errorf("stage on %s cancelled: the script ended after TERM: %w", c.addr, cause)
	case <-timer.C:
	}

	c.cfg.Logf("ssh %s: stage still running %s after TERM: sending KILL", c.addr, grace)
	sess.Signal(ssh.SIGKILL)
	sess.Close()
	return fmt.Errorf("stage on %s cancelled: still running %s after TERM, sent KILL: %w", c.addr, grace, cause)
}

// classify maps the end of a session onto the failure vocabulary.
func (c *Client) classify(err error) error {
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
	// Opening or starting the session failed, or copying output failed.
	// If the connection is gone that is the real story.
	select {
	case <-c.connDone:
		return c.lost(err)
	default:
	}
	return fmt.Errorf("stage on %s: %w", c.addr, err)
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
// and the caller may close its job log as soon as Run returns. Dropping
// rather than failing keeps the channel drained, so the guest never blocks
// on a full window.
type gate struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
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
	if g.closed {
		return len(p), nil
	}
	return g.w.Write(p)
}

func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}
