package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a long-lived gitlab-runner (`run`, `run-single`) inside the host.
type Process struct {
	name string
	cmd  *cmdHandle
	log  *logBuffer
	done chan struct{}
	err  error
}

type cmdHandle struct {
	pid    int
	signal func(os.Signal) error
}

// Start starts gitlab-runner with args (see Command) and stops it forcefully
// at cleanup if the test has not. Its output goes to the test log when the
// test fails and to Log().
func (tb *Testbed) Start(t testing.TB, args ...string) *Process {
	t.Helper()
	p, err := tb.Launch(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("gitlab-runner %s output:\n%s", p.name, p.Log())
		}
	})
	return p
}

// Launch is Start outside a test; the caller must Stop the process.
func (tb *Testbed) Launch(args ...string) (*Process, error) {
	cmd := tb.Command(context.Background(), args...)
	lb := &logBuffer{changed: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = lb, lb
	// Its own process group: a signal for it must not reach the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start gitlab-runner %v: %w", args, err)
	}
	p := &Process{
		name: strings.Join(args, " "),
		cmd:  &cmdHandle{pid: cmd.Process.Pid, signal: cmd.Process.Signal},
		log:  lb,
		done: make(chan struct{}),
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Stop SIGKILLs the runner's process group unless it has exited already.
func (p *Process) Stop() {
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-p.cmd.pid, syscall.SIGKILL)
		<-p.done
	}
}

// PID of the runner process.
func (p *Process) PID() int { return p.cmd.pid }

// Signal sends sig to the runner.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.signal(sig) }

// Kill SIGKILLs the runner and waits for it: a crash, as far as anything
// the runner started is concerned.
func (p *Process) Kill() {
	_ = p.cmd.signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("gitlab-runner %s still running: %w", p.name, ctx.Err())
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log is everything the runner printed so far.
func (p *Process) Log() string { return p.log.String() }

// WaitLog waits until the runner's output contains s.
func (p *Process) WaitLog(ctx context.Context, s string) error {
	for {
		text, changed := p.log.snapshot()
		if strings.Contains(text, s) {
			return nil
		}
		select {
		case <-changed:
		case <-p.done:
			if strings.Contains(p.log.String(), s) {
				return nil
			}
			return fmt.Errorf("gitlab-runner %s exited (%v) without printing %q", p.name, p.err, s)
		case <-ctx.Done():
			return fmt.Errorf("gitlab-runner %s did not print %q: %w", p.name, s, ctx.Err())
		}
	}
}

// Scrape fetches the runner's /metrics from inside the host (listen_address
// is on the host's loopback there).
func (tb *Testbed) Scrape(ctx context.Context, addr string) (string, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: tb.Host.DialContext}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return string(b), err
}

// logBuffer is a concurrency-safe output sink that wakes waiters on write.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.buf.Write(b)
	close(l.changed)
	l.changed = make(chan struct{})
	return n, err
}

func (l *logBuffer) String() string {
	s, _ := l.snapshot()
	return s
}

func (l *logBuffer) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String(), l.changed
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// Plain removes the colour codes gitlab-runner's log format adds.
func Plain(s string) string { return ansi.ReplaceAllString(s, "") }
