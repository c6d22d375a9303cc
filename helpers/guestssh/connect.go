// Package guestssh runs job stages in a guest VM over SSH, in-process.
//
// One Client per job, one session per stage. Connect waits for a booting
// guest's sshd and checks its host key against pinned keys; Run feeds a
// stage script on stdin to a shell and classifies the outcome into the
// job's exit status (*failure.ScriptError) or infrastructure trouble
// (*LostError and friends, system failures).
package guestssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// Dialer opens the TCP connection to the guest. The simulated host injects
// one that dials from inside a network namespace.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Defaults for the zero values in Config.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveMax      = 3
	DefaultKillGrace         = 10 * time.Second
	DefaultAuthRetries       = 2
)

// Retry pacing while the guest boots: start small so a guest that becomes
// ready is noticed within tens of milliseconds, cap low so we never sleep
// through much of its readiness.
const (
	backoffStart = 20 * time.Millisecond
	backoffMax   = 50 * time.Millisecond
	// connectTimeoutStart is the TCP connect timeout of an attempt; after
	// slowNetworkAfter connects that timed out it doubles with each further
	// one, up to HandshakeTimeout.
	connectTimeoutStart = 250 * time.Millisecond
	slowNetworkAfter    = 8
	// authRetryDelay spaces authentication retries; see Config.AuthRetries.
	authRetryDelay = 500 * time.Millisecond
)

// Config says how to reach and trust a guest. The zero value of each
// duration or count means its default.
type Config struct {
	User     string
	Signers  []ssh.Signer
	Password string // optional; never logged, never in errors or String()

	// HostKeys are the pinned keys: the template's (all its clones share
	// them) or the one generated for this very VM.
	HostKeys []ssh.PublicKey
	// HostKeyAlias names HostKeys in messages: the known_hosts alias they
	// were loaded under, normally the template name.
	HostKeyAlias string
	// HostKeyAdvice, when set, is what a *HostKeyError tells the operator
	// to do instead of updating a template's pin.
	HostKeyAdvice string
	// InsecureIgnoreHostKey accepts any host key. It exists for debugging
	// a template only; the caller must log loudly when it is set.
	InsecureIgnoreHostKey bool
	// TrustFirstKey, with no HostKeys, accepts whatever key the server
	// presents and hands it over: trust on first use, for a guest we have
	// just created from an operator's image on the isolated CI bridge
	// (template build), whose key is then pinned for every later use.
	TrustFirstKey func(ssh.PublicKey)

	Dialer Dialer // nil means a plain net.Dialer

	HandshakeTimeout time.Duration // per attempt; bounds dial and SSH handshake
	// KeepAliveInterval paces keepalive@openssh.com requests; negative
	// disables keepalives.
	KeepAliveInterval time.Duration
	KeepAliveMax      int           // consecutive unanswered keepalives before the connection is declared lost
	KillGrace         time.Duration // between TERM and KILL when a stage is cancelled

	// AuthRetries is how many times an authentication failure is retried
	// before Connect gives up with *AuthError (0 means DefaultAuthRetries,
	// negative means none). sshd can accept connections a moment before the
	// guest is ready for the user: cloud-init may still be writing
	// authorized_keys, and pam_nologin turns users away until boot ends. A
	// couple of spaced retries ride that out; a wrong identity_file still
	// fails in about a second instead of at the boot deadline.
	AuthRetries int

	// Logf receives diagnostics (attempts, retries, keepalive misses). It is
	// never passed a secret.
	Logf func(format string, args ...any)
}

// String describes the configuration without secrets, so a Config that
// ends up in a log line does not leak the password.
func (c Config) String() string {
	pw := ""
	if c.Password != "" {
		pw = " password=<redacted>"
	}
	return fmt.Sprintf("guestssh.Config{user=%q keys=%d%s hostkeys=%s insecure=%t}",
		c.User, len(c.Signers), pw, describeKeys(c.HostKeys), c.InsecureIgnoreHostKey)
}

// GoString keeps %#v from printing the password field.
func (c Config) GoString() string { return c.String() }

func (c Config) withDefaults() Config {
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if c.KeepAliveMax <= 0 {
		c.KeepAliveMax = DefaultKeepAliveMax
	}
	if c.KillGrace <= 0 {
		c.KillGrace = DefaultKillGrace
	}
	switch {
	case c.AuthRetries == 0:
		c.AuthRetries = DefaultAuthRetries
	case c.AuthRetries < 0:
		c.AuthRetries = 0
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c
}

func (c Config) validate() error {
	if c.User == "" {
		return failure.Configf("ssh: no user set; set user to the account in the template that runs jobs")
	}
	if len(c.Signers) == 0 && c.Password == "" {
		return failure.Configf("ssh: no credentials; set identity_file (or a password)")
	}
	if len(c.HostKeys) == 0 && !c.InsecureIgnoreHostKey && c.TrustFirstKey == nil {
		return failure.Configf("ssh: no pinned host key; set known_hosts_file with an entry for the template " +
			"(its /etc/ssh/ssh_host_ed25519_key.pub), host keys are always verified")
	}
	return nil
}

// Client is one job's SSH connection to its guest.
type Client struct {
	addr string
	cfg  Config
	ssh  *ssh.Client

	stop      chan struct{} // closed by Close: stops keepalives
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // every goroutine this Client started

	connDone chan struct{} // closed when the transport has ended

	mu      sync.Mutex
	closed  bool  // Close was called
	lostWhy error // why the connection ended, if it ended on its own
	connErr error // what the transport reported when it ended
}

// Connect dials addr and handshakes, retrying while the guest boots until ctx
// ends; ctx is normally bounded by the boot deadline. A host key mismatch and
// bad settings fail at once; an authentication failure after
// Config.AuthRetries retries.
func Connect(ctx context.Context, addr string, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.InsecureIgnoreHostKey {
		cfg.Logf("ssh %s: WARNING: host key verification is disabled (InsecureIgnoreHostKey)", addr)
	}

	var (
		attempts  int
		authFails int
		lastErr   error
		lastLog   string
		delay     = backoffStart
		start     = time.Now()
		connectIn = min(connectTimeoutStart, cfg.HandshakeTimeout)
		timeouts  int
	)
	for {
		attempts++
		sc, err := dialOnce(ctx, addr, cfg, connectIn)
		if errors.Is(err, errConnectTimeout) {
			// A guest configures its address within moments of its lease;
			// connects that keep timing out after that point to a slow
			// network, so give them longer.
			if timeouts++; timeouts > slowNetworkAfter {
				connectIn = min(connectIn*2, cfg.HandshakeTimeout)
			}
		}
		if err == nil {
			if attempts > 1 {
				cfg.Logf("ssh %s: connected after %d attempts in %s", addr, attempts, time.Since(start).Round(time.Millisecond))
			}
			return newClient(addr, cfg, sc), nil
		}
		if ctxEnded(ctx) {
			// The attempt was cut short by ctx, and its error mostly says
			// only that; an earlier attempt's error says more, if any.
			if lastErr == nil {
				lastErr = err
			}
			return nil, gaveUp(ctx, addr, attempts, start, lastErr)
		}
		lastErr = err

		var (
			hke *HostKeyError
			ae  *AuthError
			ce  *failure.ConfigError
		)
		switch {
		case errors.As(err, &hke), errors.As(err, &ce):
			return nil, err
		case errors.As(err, &ae):
			authFails++
			ae.Attempts = authFails
			if authFails > cfg.AuthRetries {
				return nil, err
			}
			cfg.Logf("ssh %s: authentication failed (attempt %d of %d), retrying in case the guest is still setting up the user",
				addr, authFails, cfg.AuthRetries+1)
			if !sleepCtx(ctx, authRetryDelay) {
				return nil, gaveUp(ctx, addr, attempts, start, lastErr)
			}
			continue
		case !retryable(err):
			return nil, fmt.Errorf("ssh %s: %w (not retried)", addr, err)
		}

		// Log when the failure changes rather than every 20ms.
		if msg := err.Error(); msg != lastLog {
			cfg.Logf("ssh %s: attempt %d: %v; retrying until the boot deadline", addr, attempts, err)
			lastLog = msg
		}
		if !sleepCtx(ctx, delay) {
			return nil, gaveUp(ctx, addr, attempts, start, lastErr)
		}
		delay = min(delay*2, backoffMax)
	}
}

// gaveUp reports the boot deadline (or cancellation) with the evidence an
// operator needs: how long, how often, and the last thing that went wrong.
func gaveUp(ctx context.Context, addr string, attempts int, start time.Time, lastErr error) error {
	cause := ctxError(ctx)
	elapsed := time.Since(start).Round(time.Millisecond)
	if lastErr == nil {
		return fmt.Errorf("ssh %s: gave up after %d attempt(s) in %s: %w", addr, attempts, elapsed, cause)
	}
	return fmt.Errorf("ssh %s: gave up after %d attempt(s) in %s: %w; last error: %w", addr, attempts, elapsed, cause, lastErr)
}

// ctxEnded reports whether ctx is done or its deadline has passed. The
// dial's own deadline can expire a moment before ctx's timer marks ctx done,
// and that attempt's "i/o timeout" is the deadline, not the guest.
func ctxEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		<-ctx.Done() // imminent; makes ctx.Err() and the cause available
		return true
	}
	return false
}

// ctxError is ctx's cause, still matching ctx.Err() with errors.Is when a
// custom cause was set.
func ctxError(ctx context.Context) error {
	err := ctx.Err()
	cause := context.Cause(ctx)
	if cause == nil || cause == err {
		return err
	}
	return fmt.Errorf("%w (%w)", cause, err)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// attemptState is what the callbacks learn during one handshake. x/crypto
// flattens some failures into plain strings, so we record the facts
// ourselves instead of parsing messages.
type attemptState struct {
	mu            sync.Mutex
	hostKeyErr    *HostKeyError
	authStarted   bool
	serverMethods []string
}

// errConnectTimeout marks an attempt whose TCP connect got no answer within
// its connect timeout.
var errConnectTimeout = errors.New("TCP connect timed out")

func dialOnce(ctx context.Context, addr string, cfg Config, connectIn time.Duration) (*ssh.Client, error) {
	// One deadline bounds the whole attempt, so a guest whose TCP stack is up
	// but whose sshd never speaks cannot stall the retry loop.
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	// The TCP connect gets less: Kea writes the lease before the guest has
	// configured its address, so the first SYN is often lost, and the
	// kernel would retransmit it only after a second. A new connect sooner
	// notices the guest's readiness within tens of milliseconds.
	dctx, dcancel := context.WithTimeout(actx, connectIn)
	conn, err := cfg.Dialer.DialContext(dctx, "tcp", addr)
	connectTimedOut := dctx.Err() != nil && actx.Err() == nil
	dcancel()
	if err != nil {
		if connectTimedOut {
			return nil, fmt.Errorf("dial: %w after %s: %w", errConnectTimeout, connectIn, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, fmt.Errorf("set handshake deadline: %w", err)
	}
	// Closing the conn is the only way to abort NewClientConn early.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	st := &attemptState{}
	sconn, chans, reqs, err := ssh.NewClientConn(conn, addr, clientConfig(addr, cfg, st))
	if err != nil {
		return nil, classifyHandshake(addr, cfg, st, err)
	}
	if !stop() {
		sconn.Close()
		return nil, ctx.Err()
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		sconn.Close()
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	return ssh.NewClient(sconn, chans, reqs), nil
}

func clientConfig(addr string, cfg Config, st *attemptState) *ssh.ClientConfig {
	var auth []ssh.AuthMethod
	if len(cfg.Signers) > 0 {
		auth = append(auth, ssh.PublicKeys(cfg.Signers...))
	}
	if cfg.Password != "" {
		auth = append(auth, ssh.Password(cfg.Password))
	}
	cc := &ssh.ClientConfig{
		User: cfg.User,
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if cfg.InsecureIgnoreHostKey {
				return nil
			}
			if len(cfg.HostKeys) == 0 && cfg.TrustFirstKey != nil {
				cfg.TrustFirstKey(key)
				return nil
			}
			got := key.Marshal()
			for _, pin := range cfg.HostKeys {
				if string(pin.Marshal()) == string(got) {
					return nil
				}
			}
			e := &HostKeyError{Addr: addr, Alias: cfg.HostKeyAlias, Got: key, Want: cfg.HostKeys, Advice: cfg.HostKeyAdvice}
			st.mu.Lock()
			st.hostKeyErr = e
			st.mu.Unlock()
			return e
		},
		// Only called once the server has answered the "none" method, so its
		// being called proves the handshake and host key check passed.
		AuthCallback: func(actx *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
			st.mu.Lock()
			st.authStarted = true
			if len(actx.AllowedMethods) > 0 {
				st.serverMethods = slices.Clone(actx.AllowedMethods)
			}
			st.mu.Unlock()
			return nil, nil
		},
	}
	if !cfg.InsecureIgnoreHostKey && len(cfg.HostKeys) > 0 {
		cc.HostKeyAlgorithms = hostKeyAlgorithms(cfg.HostKeys)
	}
	return cc
}

// classifyHandshake turns a failed NewClientConn into HostKeyError,
// AuthError or a transient error for the retry loop.
func classifyHandshake(addr string, cfg Config, st *attemptState, err error) error {
	st.mu.Lock()
	hke, authStarted, serverMethods := st.hostKeyErr, st.authStarted, st.serverMethods
	st.mu.Unlock()

	if hke != nil {
		return hke
	}
	var neg *ssh.AlgorithmNegotiationError
	if errors.As(err, &neg) && neg.What == "host key" && !cfg.InsecureIgnoreHostKey {
		return &HostKeyError{Addr: addr, Alias: cfg.HostKeyAlias, Want: cfg.HostKeys, ServerAlgorithms: neg.RequestedAlgorithms, Advice: cfg.HostKeyAdvice}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("handshake timed out after %s (sshd accepted the connection but did not finish the handshake): %w",
			cfg.HandshakeTimeout, err)
	}
	// A transport error during authentication is sshd going away (still
	// starting, or pam_nologin closing on us), not a verdict on our key.
	if authStarted && !isTransportError(err) {
		return &AuthError{Addr: addr, User: cfg.User, Offered: offeredMethods(cfg), ServerMethods: serverMethods, Err: err}
	}
	return err
}

func offeredMethods(cfg Config) []string {
	var out []string
	for _, s := range cfg.Signers {
		out = append(out, "publickey ("+describeKey(s.PublicKey())+")")
	}
	if cfg.Password != "" {
		out = append(out, "password")
	}
	return out
}

// isTransportError reports failures of the connection itself, as opposed to
// a protocol-level answer from the server.
func isTransportError(err error) bool {
	var ne net.Error
	var errno syscall.Errno
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne) || errors.As(err, &errno)
}

// retryable reports whether another attempt could succeed. While a guest
// boots almost anything can happen on the wire (refused, reset, EOF,
// timeouts, no route), and an unexpected error retried until the deadline
// costs time where one wrongly treated as final costs the job, so only
// errors that cannot heal stop the loop.
func retryable(err error) bool {
	var addrErr *net.AddrError
	var parseErr *net.ParseError
	var neg *ssh.AlgorithmNegotiationError
	switch {
	case errors.As(err, &addrErr), errors.As(err, &parseErr):
		return false // a malformed address
	case errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EINVAL):
		return false
	case errors.Is(err, os.ErrPermission):
		return false // e.g. the namespace dialer lacks privileges
	case errors.As(err, &neg):
		return false // no common cipher/kex: the guest's sshd will not change its mind
	}
	return true
}

func newClient(addr string, cfg Config, sc *ssh.Client) *Client {
	c := &Client{
		addr:     addr,
		cfg:      cfg,
		ssh:      sc,
		stop:     make(chan struct{}),
		connDone: make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := sc.Wait()
		c.mu.Lock()
		c.connErr = err
		c.mu.Unlock()
		close(c.connDone)
	}()
	if cfg.KeepAliveInterval > 0 {
		c.wg.Add(1)
		go c.keepAlive()
	}
	return c
}

// Addr is the guest address this client is connected to.
func (c *Client) Addr() string { return c.addr }

// Close ends the connection and waits for the Client's goroutines. It is
// safe to call more than once; later calls return nil.
func (c *Client) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.stop)
		if err := c.ssh.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.closeErr = err
		}
	})
	c.wg.Wait()
	if !first {
		return nil
	}
	return c.closeErr
}
