package guestssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

func TestConnectRetriesWhileGuestBoots(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, exitStatusHandler(0))
	refused, silent := closedPort(t), silentListener(t)

	// The guest as seen over time: nothing listening, then a port that
	// accepts but never sends a banner, then sshd.
	var dials atomic.Int32
	var d net.Dialer
	cfg := srv.clientConfig()
	cfg.HandshakeTimeout = 500 * time.Millisecond
	logs := &logRecorder{t: t}
	cfg.Logf = logs.Logf
	cfg.Dialer = dialFunc(func(ctx context.Context, network, _ string) (net.Conn, error) {
		switch dials.Add(1) {
		case 1, 2:
			return d.DialContext(ctx, network, refused)
		case 3:
			return d.DialContext(ctx, network, silent)
		default:
			return d.DialContext(ctx, network, srv.addr)
		}
	})

	c := connect(t, srv, cfg)
	assert.Equal(t, int32(4), dials.Load())
	assert.Equal(t, int32(1), srv.accepts.Load())
	assert.Equal(t, srv.addr, c.Addr())
	assert.Contains(t, logs.String(), "connection refused")
	assert.Contains(t, logs.String(), "handshake timed out")
	assert.Contains(t, logs.String(), "connected after 4 attempts")
	require.NoError(t, c.Run(context.Background(), "sh", nil, nil, nil))
}

func TestConnectGivesUpAtDeadline(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, exitStatusHandler(0))
	refused := closedPort(t)
	cfg := srv.clientConfig()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err := Connect(ctx, refused, cfg)
	require.Error(t, err)
	assert.Nil(t, c)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "connection refused", "the last dial error is reported")
	assert.Regexp(t, `gave up after \d+ attempt`, err.Error())
	assert.NotContains(t, err.Error(), "gave up after 1 attempt", "refused connections are retried")
	assert.Equal(t, failure.System, failure.KindOf(err))
}

func TestConnectCancelDuringHandshake(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, exitStatusHandler(0))
	silent := silentListener(t)
	cfg := srv.clientConfig()
	cfg.HandshakeTimeout = time.Minute
	dialer := &countingDialer{}
	cfg.Dialer = dialer

	cause := errors.New("job cancelled from the UI")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(100*time.Millisecond, func() { cancel(cause) })

	done := make(chan error, 1)
	go func() {
		_, err := Connect(ctx, silent, cfg)
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.ErrorIs(t, err, cause)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, int32(1), dialer.n.Load())
	case <-time.After(10 * time.Second):
		t.Fatal("Connect ignored the cancelled context during the handshake")
	}
}

func TestConnectHostKeyMismatchFailsFast(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, exitStatusHandler(0))
	_, pinned := newEd25519Key(t)
	cfg := srv.clientConfig()
	cfg.HostKeys = []ssh.PublicKey{pinned}
	dialer := &countingDialer{}
	cfg.Dialer = dialer

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Connect(ctx, srv.addr, cfg)

	var hke *HostKeyError
	require.ErrorAs(t, err, &hke)
	assert.NoError(t, ctx.Err(), "returned before the deadline")
	assert.Equal(t, int32(1), dialer.n.Load(), "never retried")
	assert.Equal(t, int32(1), srv.accepts.Load())
	assert.Equal(t, srv.addr, hke.Addr)
	require.NotNil(t, hke.Got)
	assert.Equal(t, srv.hostKey().Marshal(), hke.Got.Marshal())
	require.Len(t, hke.Want, 1)
	assert.Equal(t, pinned.Marshal(), hke.Want[0].Marshal())

	msg := err.Error()
	assert.Contains(t, msg, ssh.FingerprintSHA256(srv.hostKey()))
	assert.Contains(t, msg, ssh.FingerprintSHA256(pinned))
	assert.Contains(t, msg, `known_hosts entry for "tmpl"`)
	assert.Contains(t, msg, "update the pinned key")
}

func TestConnectHostKeyAlgorithms(t *testing.T) {
	ed, _ := newEd25519Key(t)
	ec := newECDSAKey(t)
	rsaKey := newRSAKey(t)
	// ECDSA and RSA first: x/crypto's default preference would pick one
	// of them and call the ed25519 pin a mismatch.
	all := []ssh.Signer{ec, rsaKey, ed}

	tests := []struct {
		name     string
		serverKs []ssh.Signer
		pin      ssh.Signer
	}{
		{"ed25519 pinned among several host keys", all, ed},
		{"rsa pinned among several host keys", all, rsaKey},
		{"rsa only", []ssh.Signer{rsaKey}, rsaKey},
		{"ecdsa pinned", all, ec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			srv := newTestServer(t, exitStatusHandler(0), withHostKeys(tt.serverKs...))
			cfg := srv.clientConfig()
			cfg.HostKeys = []ssh.PublicKey{tt.pin.PublicKey()}
			c := connect(t, srv, cfg)
			require.NoError(t, c.Run(context.Background(), "sh", nil, nil, nil))
		})
	}

	t.Run("server lacks the pinned key type", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0), withHostKeys(ec))
		cfg := srv.clientConfig()
		cfg.HostKeys = []ssh.PublicKey{ed.PublicKey()}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := Connect(ctx, srv.addr, cfg)
		var hke *HostKeyError
		require.ErrorAs(t, err, &hke)
		assert.Nil(t, hke.Got)
		assert.Contains(t, hke.ServerAlgorithms, ssh.KeyAlgoECDSA256)
		assert.Equal(t, int32(1), srv.accepts.Load(), "never retried")
		assert.Contains(t, err.Error(), "none of which matches the pinned key(s)")
	})
}

func TestConnectInsecureIgnoreHostKey(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, exitStatusHandler(0))
	cfg := srv.clientConfig()
	cfg.HostKeys = nil
	cfg.InsecureIgnoreHostKey = true
	logs := &logRecorder{t: t}
	cfg.Logf = logs.Logf
	connect(t, srv, cfg)
	assert.Contains(t, logs.String(), "host key verification is disabled")
}

func TestConnectAuthFailure(t *testing.T) {
	tests := []struct {
		name        string
		authRetries int
		wantAccepts int32
	}{
		{"default retries", 0, 1 + DefaultAuthRetries},
		{"no retries", -1, 1},
		{"one retry", 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			srv := newTestServer(t, exitStatusHandler(0))
			wrong, wrongPub := newEd25519Key(t)
			cfg := srv.clientConfig()
			cfg.Signers = []ssh.Signer{wrong}
			cfg.AuthRetries = tt.authRetries

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Connect(ctx, srv.addr, cfg)

			var ae *AuthError
			require.ErrorAs(t, err, &ae)
			assert.NoError(t, ctx.Err(), "gave up before the deadline")
			assert.Equal(t, tt.wantAccepts, srv.accepts.Load())
			assert.Equal(t, int(tt.wantAccepts), ae.Attempts)
			assert.Equal(t, testUser, ae.User)
			assert.Contains(t, ae.ServerMethods, "publickey")
			msg := err.Error()
			assert.Contains(t, msg, `user "ci"`)
			assert.Contains(t, msg, "publickey")
			assert.Contains(t, msg, ssh.FingerprintSHA256(wrongPub), "names the key offered")
			assert.Contains(t, msg, "identity_file")
			assert.Contains(t, msg, "authorized_keys")
		})
	}
}

func TestConnectPassword(t *testing.T) {
	const password = "correct-horse-battery-staple"

	t.Run("accepted", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0), withPassword(password))
		cfg := srv.clientConfig()
		cfg.Signers = nil
		cfg.Password = password
		c := connect(t, srv, cfg)
		require.NoError(t, c.Run(context.Background(), "sh", nil, nil, nil))
	})

	t.Run("never shown", func(t *testing.T) {
		checkGoroutines(t)
		srv := newTestServer(t, exitStatusHandler(0), withPassword("something-else"))
		cfg := srv.clientConfig()
		cfg.Signers = nil
		cfg.Password = password
		logs := &logRecorder{t: t}
		cfg.Logf = logs.Logf

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := Connect(ctx, srv.addr, cfg)
		var ae *AuthError
		require.ErrorAs(t, err, &ae)
		assert.Contains(t, err.Error(), "password")

		for name, s := range map[string]string{
			"error":   err.Error(),
			"logs":    logs.String(),
			"String":  cfg.String(),
			"%v":      fmt.Sprintf("%v", cfg),
			"%+v":     fmt.Sprintf("%+v", cfg),
			"%#v":     fmt.Sprintf("%#v", cfg),
			"pointer": fmt.Sprintf("%+v", &cfg),
		} {
			assert.NotContains(t, s, password, name)
		}
		assert.Contains(t, cfg.String(), "<redacted>")
	})
}

func TestConnectRejectsIncompleteConfig(t *testing.T) {
	_, hostKey := newEd25519Key(t)
	signer, _ := newEd25519Key(t)
	base := Config{User: "ci", Signers: []ssh.Signer{signer}, HostKeys: []ssh.PublicKey{hostKey}}

	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"no user", func(c *Config) { c.User = "" }, "no user"},
		{"no credentials", func(c *Config) { c.Signers = nil }, "no credentials"},
		{"no pinned host key", func(c *Config) { c.HostKeys = nil }, "no pinned host key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			dialer := &countingDialer{}
			cfg.Dialer = dialer
			_, err := Connect(context.Background(), "127.0.0.1:22", cfg)
			require.Error(t, err)
			assert.Equal(t, failure.Config, failure.KindOf(err))
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Zero(t, dialer.n.Load(), "nothing dialed")
		})
	}
}

func TestConnectBadAddressNotRetried(t *testing.T) {
	srv := newTestServer(t, exitStatusHandler(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Connect(ctx, "127.0.0.1", srv.clientConfig()) // no port
	require.Error(t, err)
	assert.NoError(t, ctx.Err())
	assert.Contains(t, err.Error(), "not retried")
}

func TestClientCloseIsIdempotent(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(t, exitStatusHandler(0))
	c := connect(t, srv, srv.clientConfig())
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	err := c.Run(context.Background(), "sh", nil, nil, nil)
	assert.ErrorIs(t, err, ErrClosed)
}
