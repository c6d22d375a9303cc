package guestssh

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// syncBuffer is a bytes.Buffer safe for x/crypto's copy goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runWithin runs a stage and fails the test if Run hangs, so a broken
// cancellation path shows up as a failure instead of a test timeout.
func runWithin(t *testing.T, ctx context.Context, c *Client, stdin io.Reader, stdout, stderr io.Writer) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, "bash -l", stdin, stdout, stderr) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRunExitClassification(t *testing.T) {
	tests := []struct {
		name    string
		handler handler
		want    error // nil, *failure.ScriptError, or a *LostError to match by type
	}{
		{"exit 0", exitStatusHandler(0), nil},
		{"exit 1", exitStatusHandler(1), &failure.ScriptError{Code: 1}},
		{"exit 42", exitStatusHandler(42), &failure.ScriptError{Code: 42}},
		{"killed", exitSignalHandler("KILL"), &failure.ScriptError{Code: 128 + 9, Signal: "SIGKILL"}},
		{"terminated", exitSignalHandler("TERM"), &failure.ScriptError{Code: 128 + 15, Signal: "SIGTERM"}},
		{"no exit status", noStatusHandler, &LostError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			srv := newTestServer(t, tt.handler)
			c := connect(t, srv, srv.clientConfig())
			err := runWithin(t, context.Background(), c, strings.NewReader("exit\n"), nil, nil)

			switch want := tt.want.(type) {
			case nil:
				require.NoError(t, err)
			case *failure.ScriptError:
				var se *failure.ScriptError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, want, se)
				assert.Equal(t, failure.Script, failure.KindOf(err))
				assert.Equal(t, want.Code, failure.ExitCode(err))
			case *LostError:
				var le *LostError
				require.ErrorAs(t, err, &le)
				assert.Equal(t, srv.addr, le.Addr)
				assert.Equal(t, failure.System, failure.KindOf(err))
				assert.Contains(t, err.Error(), "was lost during the stage")
				assert.Contains(t, err.Error(), "without reporting an exit status")
			}
		})
	}
}

func TestRunDeliversScriptOnStdinAndSeparatesStreams(t *testing.T) {
	checkGoroutines(t)
	var gotCommand, gotScript string
	srv := newTestServer(t, func(s *stage) {
		script, err := io.ReadAll(s.ch)
		if err != nil {
			s.t.Errorf("read stdin: %v", err)
		}
		gotCommand, gotScript = s.command, string(script)
		io.WriteString(s.ch, "building\n")
		io.WriteString(s.ch.Stderr(), "warning: deprecated\n")
		io.WriteString(s.ch, "done\n")
		s.exit(0)
	})
	c := connect(t, srv, srv.clientConfig())

	script := "set -e\necho building\n" + strings.Repeat("# long line to exceed a packet\n", 4096)
	var stdout, stderr syncBuffer
	require.NoError(t, runWithin(t, context.Background(), c, strings.NewReader(script), &stdout, &stderr))
	assert.Equal(t, "bash -l", gotCommand)
	assert.Equal(t, script, gotScript)
	assert.Equal(t, "building\ndone\n", stdout.String())
	assert.Equal(t, "warning: deprecated\n", stderr.String())
}

// firstWriteSignal closes first when the first bytes arrive.
type firstWriteSignal struct {
	syncBuffer
	once  sync.Once
	first chan struct{}
}

func (w *firstWriteSignal) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	w.once.Do(func() { close(w.first) })
	return n, err
}

func TestRunStreamsOutput(t *testing.T) {
	checkGoroutines(t)
	out := &firstWriteSignal{first: make(chan struct{})}
	// The guest echoes stdin in small chunks with pauses, and will not go on
	// after the first chunk until the job's writer has seen it. Buffering
	// the output until the stage ends would stall here.
	srv := newTestServer(t, func(s *stage) {
		buf := make([]byte, 4)
		for i := 0; ; i++ {
			n, err := s.ch.Read(buf)
			if n > 0 {
				s.ch.Write(buf[:n])
			}
			if err != nil {
				break
			}
			if i == 0 {
				select {
				case <-out.first:
				case <-time.After(5 * time.Second):
					s.t.Error("the first chunk did not reach the writer while the stage was running")
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.exit(0)
	})
	c := connect(t, srv, srv.clientConfig())

	input := "line 1\nline 2\nline 3\n"
	require.NoError(t, runWithin(t, context.Background(), c, strings.NewReader(input), out, nil))
	assert.Equal(t, input, out.String())
}

func TestRunConnectionDropped(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, dropHandler)
	c := connect(t, srv, srv.clientConfig())

	var stdout syncBuffer
	err := runWithin(t, context.Background(), c, nil, &stdout, nil)
	var le *LostError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, failure.System, failure.KindOf(err))
	assert.Contains(t, err.Error(), "connection to "+srv.addr+" was lost during the stage")
	assert.Contains(t, err.Error(), "connection closed")

	// The client is done for; later stages say so at once.
	err = runWithin(t, context.Background(), c, nil, nil, nil)
	require.ErrorAs(t, err, &le)
}

func TestRunSeveralStagesOnOneConnection(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, func(s *stage) {
		io.Copy(s.ch, s.ch)
		s.exit(0)
	})
	c := connect(t, srv, srv.clientConfig())
	for _, stageName := range []string{"prepare_script", "get_sources", "build_script", "after_script"} {
		var out syncBuffer
		require.NoError(t, runWithin(t, context.Background(), c, strings.NewReader(stageName), &out, nil))
		assert.Equal(t, stageName, out.String())
	}
	assert.Equal(t, int32(1), srv.accepts.Load())
	assert.Equal(t, int32(4), srv.sessions.Load())
}

// signalRecorder is a stage that logs the signals it gets and reacts like a
// shell: exitOnTERM decides whether TERM ends it; KILL always does.
type signalRecorder struct {
	mu      sync.Mutex
	got     []string
	at      []time.Time
	running chan struct{}
}

func (r *signalRecorder) handler(exitOnTERM bool) handler {
	return func(s *stage) {
		close(r.running)
		for {
			select {
			case sig := <-s.signals:
				r.mu.Lock()
				r.got = append(r.got, sig)
				r.at = append(r.at, time.Now())
				r.mu.Unlock()
				if sig == "KILL" || (sig == "TERM" && exitOnTERM) {
					s.exitSignal(sig)
					return
				}
			case <-s.gone:
				return
			case <-s.quit:
				return
			}
		}
	}
}

func (r *signalRecorder) signals() ([]string, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...), append([]time.Time(nil), r.at...)
}

func TestRunCancel(t *testing.T) {
	const grace = 300 * time.Millisecond

	t.Run("TERM then KILL after the grace period", func(t *testing.T) {
		checkGoroutines(t)
		rec := &signalRecorder{running: make(chan struct{})}
		srv := newTestServer(t, rec.handler(false))
		cfg := srv.clientConfig()
		cfg.KillGrace = grace
		c := connect(t, srv, cfg)

		cause := errors.New("job cancelled by user")
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			<-rec.running
			cancel(cause)
		}()
		err := runWithin(t, ctx, c, nil, nil, nil)
		require.Error(t, err)
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, cause)
		assert.Contains(t, err.Error(), "sent KILL")
		assert.Equal(t, failure.System, failure.KindOf(err))

		// KILL is sent just before Run returns; give the server a moment
		// to read it.
		require.Eventually(t, func() bool { got, _ := rec.signals(); return len(got) == 2 }, 5*time.Second, 10*time.Millisecond)
		got, at := rec.signals()
		assert.Equal(t, []string{"TERM", "KILL"}, got)
		assert.GreaterOrEqual(t, at[1].Sub(at[0]), grace/2, "KILL waits for the grace period")

		// The connection survives a cancelled stage (after_script still runs).
		assert.NoError(t, c.usable())
	})

	t.Run("script that exits on TERM gets no KILL", func(t *testing.T) {
		checkGoroutines(t)
		rec := &signalRecorder{running: make(chan struct{})}
		srv := newTestServer(t, rec.handler(true))
		cfg := srv.clientConfig()
		cfg.KillGrace = 10 * time.Second // Run must not wait for it
		c := connect(t, srv, cfg)

		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		go func() {
			<-rec.running
			cancel()
		}()
		err := runWithin(t, ctx, c, nil, nil, nil)
		require.ErrorIs(t, err, context.Canceled)
		assert.Contains(t, err.Error(), "ended after TERM")
		got, _ := rec.signals()
		assert.Equal(t, []string{"TERM"}, got)
	})

	t.Run("cancelled while the exec request is pending", func(t *testing.T) {
		checkGoroutines(t)
		rec := &signalRecorder{running: make(chan struct{})}
		execGate := make(chan struct{})
		srv := newTestServer(t, rec.handler(false), withExecGate(execGate))
		cfg := srv.clientConfig()
		cfg.KillGrace = 100 * time.Millisecond
		c := connect(t, srv, cfg)

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		err := runWithin(t, ctx, c, nil, nil, nil)
		require.ErrorIs(t, err, context.Canceled)
		assert.Contains(t, err.Error(), "before it started")

		// sshd finally starts the command: nobody waits for it any more, so
		// it is killed at once.
		close(execGate)
		require.Eventually(t, func() bool { got, _ := rec.signals(); return len(got) == 1 }, 5*time.Second, 10*time.Millisecond)
		got, _ := rec.signals()
		assert.Equal(t, []string{"KILL"}, got)
	})

	t.Run("deadline already passed", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0))
		c := connect(t, srv, srv.clientConfig())
		ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
		defer cancel()
		err := runWithin(t, ctx, c, nil, nil, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Zero(t, srv.sessions.Load(), "no session opened")
	})
}

func TestKeepAlive(t *testing.T) {
	t.Run("unanswered keepalives end the stage", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, hangHandler, withoutKeepAliveReplies())
		cfg := srv.clientConfig()
		cfg.KeepAliveInterval = 50 * time.Millisecond
		cfg.KeepAliveMax = 3
		c := connect(t, srv, cfg)

		err := runWithin(t, context.Background(), c, nil, nil, nil)
		var le *LostError
		require.ErrorAs(t, err, &le)
		assert.Contains(t, err.Error(), "was lost during the stage")
		assert.Contains(t, err.Error(), "keepalive missed 3 times")
		assert.GreaterOrEqual(t, srv.keepAlives.Load(), int32(1))
	})

	t.Run("answered keepalives keep a long stage alive", func(t *testing.T) {
		checkGoroutines(t)
		var srv *testServer
		// The stage outlives several keepalive rounds: it ends only once the
		// guest has answered five of them.
		srv = newTestServer(t, func(s *stage) {
			deadline := time.Now().Add(5 * time.Second)
			for srv.keepAlives.Load() < 5 {
				if time.Now().After(deadline) {
					s.t.Error("no keepalives arrived")
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			s.exit(0)
		})
		cfg := srv.clientConfig()
		cfg.KeepAliveInterval = 20 * time.Millisecond
		cfg.KeepAliveMax = 10 // generous: -race on a loaded machine answers slowly
		c := connect(t, srv, cfg)

		// Refusals count as answers, as with OpenSSH.
		require.NoError(t, runWithin(t, context.Background(), c, nil, nil, nil))
	})
}

func TestRunScriptExitsBeforeReadingAllStdin(t *testing.T) {
	checkGoroutines(t)
	// "exit 0" early in a long script: sshd closes the channel while we are
	// still sending the rest. x/crypto reports that as a copy error.
	srv := newTestServer(t, exitStatusHandler(0))
	c := connect(t, srv, srv.clientConfig())
	script := "exit 0\n" + strings.Repeat("echo never reached\n", 100_000)
	require.NoError(t, runWithin(t, context.Background(), c, strings.NewReader(script), nil, nil))
}

func TestRunStdinReadFailureIsNotTheScriptsFault(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, func(s *stage) {
		io.Copy(io.Discard, s.ch)
		s.exit(0) // the shell happily ran the part it got
	})
	c := connect(t, srv, srv.clientConfig())
	broken := io.MultiReader(strings.NewReader("echo first half\n"), iotest.ErrReader(errors.New("disk read error")))
	err := runWithin(t, context.Background(), c, broken, nil, nil)
	require.Error(t, err)
	assert.Equal(t, failure.System, failure.KindOf(err))
	assert.Contains(t, err.Error(), "reading the stage script failed")
	assert.Contains(t, err.Error(), "disk read error")
}

type failingWriter struct{ writes int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	return 0, errors.New("job log closed")
}

func TestRunOutputWriterFailure(t *testing.T) {
	checkGoroutines(t)
	// More output than the channel window: if the failing writer stopped
	// the copy, the guest would block and the stage would never end.
	srv := newTestServer(t, func(s *stage) {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for range 64 {
			if _, err := s.ch.Write(chunk); err != nil {
				s.t.Errorf("guest write blocked or failed: %v", err)
				return
			}
		}
		s.exit(0)
	})
	c := connect(t, srv, srv.clientConfig())
	w := &failingWriter{}
	err := runWithin(t, context.Background(), c, nil, w, nil)
	require.Error(t, err)
	assert.Equal(t, failure.System, failure.KindOf(err))
	assert.Contains(t, err.Error(), "writing the job output failed: job log closed")
	assert.Equal(t, 1, w.writes, "a failed writer is not called again")
}

func TestGateDropsWritesAfterShut(t *testing.T) {
	var buf bytes.Buffer
	g := newGate(&buf)
	n, err := g.Write([]byte("live "))
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	g.shut()
	n, err = g.Write([]byte("late"))
	require.NoError(t, err, "late output is dropped, not failed, so the channel keeps draining")
	assert.Equal(t, 4, n)
	assert.Equal(t, "live ", buf.String())
}

func TestPing(t *testing.T) {
	t.Run("a live guest answers", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0))
		c := connect(t, srv, srv.clientConfig())
		before := srv.keepAlives.Load()
		require.NoError(t, c.Ping(context.Background()))
		assert.Equal(t, before+1, srv.keepAlives.Load())
	})
	t.Run("a wedged sshd does not answer before the deadline", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0), withoutKeepAliveReplies())
		c := connect(t, srv, srv.clientConfig())
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := c.Ping(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "no answer to a ping")
		require.NoError(t, c.Close())
	})
	t.Run("a vanished guest is reported lost", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0))
		c := connect(t, srv, srv.clientConfig())
		srv.shutdown()
		require.Eventually(t, func() bool {
			var le *LostError
			return errors.As(c.Ping(context.Background()), &le)
		}, 5*time.Second, 10*time.Millisecond)
	})
	t.Run("a closed client", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0))
		c := connect(t, srv, srv.clientConfig())
		require.NoError(t, c.Close())
		assert.ErrorIs(t, c.Ping(context.Background()), ErrClosed)
	})
}
