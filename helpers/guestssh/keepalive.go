package guestssh

import (
	"context"
	"fmt"
	"time"
)

// keepAliveRequest is what OpenSSH's client sends (ServerAliveInterval). Any
// reply, even a refusal, proves the guest's sshd is alive.
const keepAliveRequest = "keepalive@openssh.com"

// keepAlive detects a guest that vanished without a FIN or RST (VM wedged,
// bridge gone), which TCP alone would only notice after many minutes. After
// KeepAliveMax intervals without a reply it closes the connection, which
// makes every running session end, so Run can report a LostError.
//
// At most one request is in flight: x/crypto serialises global requests
// anyway, and a request stuck on a dead peer would pin a goroutine per tick.
func (c *Client) keepAlive() {
	defer c.wg.Done()
	interval, maxMissed := c.cfg.KeepAliveInterval, c.cfg.KeepAliveMax
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	var (
		inFlight chan error // nil when no request is outstanding
		missed   int
	)
	for {
		select {
		case <-c.stop:
			return
		case <-c.connDone:
			return
		case err := <-inFlight:
			inFlight = nil
			if err != nil {
				return // the transport ended; the connection watcher has the reason
			}
			if missed > 0 {
				c.cfg.Logf("ssh %s: keepalive answered after %d missed interval(s)", c.addr, missed)
			}
			missed = 0
		case <-ticker.C:
			if inFlight == nil {
				inFlight = c.sendKeepAlive()
				continue
			}
			missed++
			c.cfg.Logf("ssh %s: keepalive unanswered for %s (%d of %d)", c.addr, time.Duration(missed)*interval, missed, maxMissed)
			if missed >= maxMissed {
				c.markLost(fmt.Errorf("keepalive missed %d times (every %s): the guest stopped answering", missed, interval))
				c.ssh.Close()
				return
			}
		}
	}
}

func (c *Client) sendKeepAlive() chan error {
	done := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// Ends when the reply arrives or the connection closes, and the
		// keepalive loop closes the connection before giving up on it.
		_, _, err := c.ssh.SendRequest(keepAliveRequest, true, nil)
		done <- err
	}()
	return done
}

// markLost records why the connection is being torn down from our side, so
// that sessions ended by it report the real cause instead of a bare EOF.
func (c *Client) markLost(why error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lostWhy == nil {
		c.lostWhy = why
	}
}

// Ping proves the guest's sshd still answers on this connection with one
// round trip, far cheaper than a session. A warm pool checks an idle VM with
// it before handing the VM to a job.
func (c *Client) Ping(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	select {
	case err := <-c.sendKeepAlive():
		if err != nil {
			return c.lost(err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ssh %s: no answer to a ping: %w", c.addr, ctx.Err())
	}
}
