package guestssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// This file holds an in-process SSH server that plays the guest's sshd, and
// the tiny scripted stage handlers the tests run on it, in the spirit of
// x/crypto's session_test.go: real protocol on real loopback TCP, no mocks.

const testUser = "ci"

// stage is one exec'd session as a handler sees it.
type stage struct {
	t       testing.TB
	command string
	ch      ssh.Channel
	conn    net.Conn        // the raw TCP connection, for dropping it
	signals <-chan string   // names from "signal" requests, in order
	gone    <-chan struct{} // the client closed the channel or the connection died
	quit    <-chan struct{} // the test is over
}

func (s *stage) exit(code uint32) {
	_, err := s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
	if err != nil {
		s.t.Logf("send exit-status: %v", err)
	}
}

func (s *stage) exitSignal(sig string) {
	msg := struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}{Signal: sig}
	if _, err := s.ch.SendRequest("exit-signal", false, ssh.Marshal(msg)); err != nil {
		s.t.Logf("send exit-signal: %v", err)
	}
}

// wait blocks until the client goes away or the test ends.
func (s *stage) wait() {
	select {
	case <-s.gone:
	case <-s.quit:
	}
}

type handler func(s *stage)

func exitStatusHandler(code uint32) handler { return func(s *stage) { s.exit(code) } }

func exitSignalHandler(sig string) handler { return func(s *stage) { s.exitSignal(sig) } }

// noStatusHandler closes the channel without exit-status or exit-signal, as a
// crashed sshd child would.
func noStatusHandler(*stage) {}

// dropHandler cuts the TCP connection mid-stage, as a dying guest would.
func dropHandler(s *stage) {
	io.WriteString(s.ch, "partial output\n")
	s.conn.Close()
}

func hangHandler(s *stage) { s.wait() }

type testServer struct {
	t        testing.TB
	ln       net.Listener
	addr     string
	config   *ssh.ServerConfig
	handler  handler
	hostKeys []ssh.Signer
	client   ssh.Signer // the key the server authorizes by default

	ignoreKeepAlives bool
	execGate         <-chan struct{} // when set, exec is answered only once it is closed

	accepts    atomic.Int32
	sessions   atomic.Int32
	keepAlives atomic.Int32

	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	open     []net.Conn
}

type serverOption func(*testServer)

// withHostKeys replaces the default single ed25519 host key; the order is
// the order the server advertises.
func withHostKeys(keys ...ssh.Signer) serverOption {
	return func(s *testServer) { s.hostKeys = keys }
}

func withPassword(pw string) serverOption {
	return func(s *testServer) {
		s.config.PasswordCallback = func(c ssh.ConnMetadata, got []byte) (*ssh.Permissions, error) {
			if c.User() == testUser && string(got) == pw {
				return nil, nil
			}
			return nil, errors.New("wrong password")
		}
	}
}

// withExecGate holds every exec request until gate is closed: an sshd that
// is slow to start the command.
func withExecGate(gate <-chan struct{}) serverOption {
	return func(s *testServer) { s.execGate = gate }
}

// withoutKeepAliveReplies makes the server read global requests but never
// answer them: a guest whose kernel still ACKs but whose sshd is wedged.
func withoutKeepAliveReplies() serverOption {
	return func(s *testServer) { s.ignoreKeepAlives = true }
}

func newTestServer(t testing.TB, h handler, opts ...serverOption) *testServer {
	t.Helper()
	hostKey, _ := newEd25519Key(t)
	client, _ := newEd25519Key(t)
	s := &testServer{t: t, handler: h, hostKeys: []ssh.Signer{hostKey}, client: client, quit: make(chan struct{})}
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() == testUser && string(k.Marshal()) == string(s.client.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	for _, o := range opts {
		o(s)
	}
	for _, k := range s.hostKeys {
		s.config.AddHostKey(k)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.ln, s.addr = ln, ln.Addr().String()
	t.Cleanup(s.shutdown)

	s.wg.Add(1)
	go s.serve()
	return s
}

// shutdown stops the server and drops every connection, as a guest that
// vanished would; tests may call it before the cleanup does.
func (s *testServer) shutdown() {
	s.stopOnce.Do(func() {
		close(s.quit)
		s.ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// hostKey is the server's first host key, the one tests usually pin.
func (s *testServer) hostKey() ssh.PublicKey { return s.hostKeys[0].PublicKey() }

// clientConfig is a Config that the server accepts, with test-sized timers.
func (s *testServer) clientConfig() Config {
	return Config{
		User:              testUser,
		Signers:           []ssh.Signer{s.client},
		HostKeys:          []ssh.PublicKey{s.hostKey()},
		HostKeyAlias:      "tmpl",
		HandshakeTimeout:  2 * time.Second,
		KeepAliveInterval: time.Second,
		KillGrace:         200 * time.Millisecond,
		Logf:              s.t.Logf,
	}
}

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		s.mu.Lock()
		s.open = append(s.open, conn)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(conn)
		}()
	}
}

func (s *testServer) serveConn(conn net.Conn) {
	defer conn.Close()
	sconn, chans, reqs, err := ssh.NewServerConn(conn, s.config)
	if err != nil {
		// Expected in the host key and auth tests; the client reports it.
		return
	}
	defer sconn.Close()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for r := range reqs {
			if r.Type == keepAliveRequest {
				s.keepAlives.Add(1)
			}
			if !s.ignoreKeepAlives && r.WantReply {
				// What OpenSSH does with requests it does not know.
				r.Reply(false, nil)
			}
		}
	}()

	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			continue
		}
		s.sessions.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveSession(conn, ch, chReqs)
		}()
	}
}

func (s *testServer) serveSession(conn net.Conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var command string
	for r := range reqs {
		if r.Type != "exec" {
			// No PTY, no env: refuse like a locked-down sshd would.
			r.Reply(false, nil)
			continue
		}
		var msg struct{ Command string }
		if err := ssh.Unmarshal(r.Payload, &msg); err != nil {
			r.Reply(false, nil)
			return
		}
		command = msg.Command
		if s.execGate != nil {
			select {
			case <-s.execGate:
			case <-s.quit:
				return
			}
		}
		r.Reply(true, nil)
		break
	}

	signals := make(chan string, 16)
	gone := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(gone)
		for r := range reqs {
			if r.Type == "signal" {
				var msg struct{ Signal string }
				if ssh.Unmarshal(r.Payload, &msg) == nil {
					signals <- msg.Signal
				}
			}
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}()

	s.handler(&stage{t: s.t, command: command, ch: ch, conn: conn, signals: signals, gone: gone, quit: s.quit})
}

// connect opens a Client to s with cfg and closes it when the test ends.
func connect(t testing.TB, s *testServer, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, s.addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// checkGoroutines fails the test if it leaves goroutines behind. Register it
// first so it runs after every other cleanup (servers, clients).
func checkGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before the test, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// dialFunc adapts a function to Dialer.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// countingDialer dials for real and counts attempts.
type countingDialer struct {
	n atomic.Int32
	d net.Dialer
}

func (c *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return c.d.DialContext(ctx, network, addr)
}

// closedPort returns an address whose port is bound but not listening, so
// the kernel refuses connections to it. Binding keeps the port reserved:
// a port merely closed again can be handed to the next listener (another
// test's, or another process's) and stop refusing.
func closedPort(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// silentListener accepts connections and never says a word: sshd's port is
// open (or a firewall proxy answers) but no banner comes.
func silentListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// logRecorder collects Logf output so tests can assert on diagnostics.
type logRecorder struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	l.t.Log(line)
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
