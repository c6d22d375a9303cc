package vmbhyve

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// DefaultListInterval is how often Boot runs `vm list` when nothing in the
// guest's vm-bhyve.log asks for an earlier look (Driver.ListInterval zero).
const DefaultListInterval = 2 * time.Second

// maxBootLog bounds the vm-bhyve.log lines a BootError keeps for the job log.
const maxBootLog = 40

// BootError is a guest that stopped before it ran: `vm _run` gave up, or
// bhyve exited during boot. Log is what vm-bhyve wrote into NAME/vm-bhyve.log
// during this start (timestamps removed), which is where `vm _run` reports
// every reason (util::log in lib/vm-util); the file goes when the VM is
// destroyed, so this copy is the only one left.
type BootError struct {
	Name string
	// Early: `vm _run` exited before vm::lock (lib/vm-run), so no loader or
	// bhyve ever ran: a "fatal; ..." check of the guest's config or of the
	// host (missing UEFI firmware, no unrestricted guest support, no IOMMU
	// for passthru). The same start fails the same way every time.
	Early bool
	Log   []string
}

func (e *BootError) Error() string {
	reason := strings.Join(e.Fatal(), "; ")
	if reason == "" {
		reason = "vm-bhyve.log gives no reason"
	}
	if e.Early {
		return fmt.Sprintf("vm-bhyve gave up starting %s before booting it: %s", e.Name, reason)
	}
	return fmt.Sprintf("%s stopped while booting: %s", e.Name, reason)
}

// Fatal is the log's "fatal; ..." lines, vm-bhyve's reasons for giving up.
func (e *BootError) Fatal() []string {
	var out []string
	for _, l := range e.Log {
		if strings.HasPrefix(l, "fatal;") {
			out = append(out, l)
		}
	}
	return out
}

func (d *Driver) listInterval() time.Duration {
	if d.ListInterval <= 0 {
		return DefaultListInterval
	}
	return d.ListInterval
}

// Boot runs `vm start NAME` and waits until `vm list` shows the guest
// Running. A guest that stops first is a *BootError; one that `vm _run`
// gave up on before locking it (BootError.Early) comes wrapped in a
// *failure.PermanentError, since starting it again cannot help.
//
// `vm list` stays the authority, but it runs under the privilege prefix and
// costs several processes per guest, so Boot mostly watches what `vm _run`
// writes without privilege into the guest's directory: NAME/vm-bhyve.log.
// vm::run logs "booting" right after vm::lock, "starting bhyve (run N)"
// right before bhyve, and "fatal; ..." or "stopped" as it gives up, so each
// of those lines calls for a `vm list` at once (then again after doubling
// pauses while the state catches up); otherwise `vm list` runs every
// ListInterval, which also covers a log this user cannot read.
func (d *Driver) Boot(ctx context.Context, name string) (VM, error) {
	if err := ValidName(name); err != nil {
		return VM{}, fmt.Errorf("boot: %w", err)
	}
	log := bootLog{path: filepath.Join(d.VMDir, name, "vm-bhyve.log")}
	log.skipExisting()
	if err := d.Start(ctx, name); err != nil {
		return VM{}, err
	}

	tick := time.NewTicker(d.pollInterval())
	defer tick.Stop()
	nextList := time.Now().Add(d.listInterval())
	backoff := time.Duration(0) // >0 while a log line awaits confirmation
	sawStarting := false
	last := "no successful vm list yet"
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return VM{}, fmt.Errorf("wait for VM %s to boot: %w; last state seen: %s; last error: %w", name, ctx.Err(), last, lastErr)
			}
			return VM{}, fmt.Errorf("wait for VM %s to boot: %w; last state seen: %s", name, ctx.Err(), last)
		case now := <-tick.C:
			if log.read() {
				backoff = d.pollInterval()
				nextList = now
			}
			if now.Before(nextList) {
				continue
			}
		}

		vm, exists, err := d.Get(ctx, name)
		switch {
		case err == nil:
			lastErr = nil
			last = describe(vm, exists)
		case failure.KindOf(err) == failure.Config:
			return VM{}, fmt.Errorf("wait for VM %s to boot: %w", name, err)
		case ctx.Err() == nil:
			lastErr = err
		}
		if err == nil {
			log.read()
			switch {
			case exists && vm.State == StateRunning:
				return vm, nil
			case exists && (vm.State == StateLocked || vm.State == StateBootloader):
				sawStarting = true
			case !exists || (vm.Stopped() && (sawStarting || log.ended)):
				be := &BootError{Name: name, Early: log.ended && !log.locked, Log: log.lines}
				if be.Early {
					return VM{}, &failure.PermanentError{Err: be}
				}
				return VM{}, be
			}
		}
		if backoff > 0 {
			nextList = time.Now().Add(backoff)
			backoff = min(2*backoff, d.listInterval())
		} else {
			nextList = time.Now().Add(d.listInterval())
		}
	}
}

// bootLog follows one start's lines of NAME/vm-bhyve.log.
type bootLog struct {
	path   string
	offset int64
	lines  []string
	// locked: vm::run logged "booting", which follows vm::lock.
	locked bool
	// ended: vm::run logged a reason to stop ("fatal; ...") or "stopped".
	ended bool
}

// skipExisting starts after what an earlier run left in the log. (A clone
// has none: zfs::clone unlinks the template's.)
func (l *bootLog) skipExisting() {
	if fi, err := os.Stat(l.path); err == nil {
		l.offset = fi.Size()
	}
}

// read takes in new complete lines and reports whether one of them is a
// milestone worth a `vm list`. An unreadable log reads as empty.
func (l *bootLog) read() bool {
	f, err := os.Open(l.path)
	if err != nil {
		// Not written yet, or not readable by this user: vm list decides.
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < l.offset {
		// util::log_rotate moved a log of 1 MiB or more aside before
		// `vm _run` wrote its first line.
		l.offset = 0
	}
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return false
	}
	milestone := false
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			// A partial last line is read again next time.
			break
		}
		l.offset += int64(len(line))
		msg := logMessage(bytes.TrimRight(line, "\r\n"))
		if len(l.lines) < maxBootLog {
			l.lines = append(l.lines, msg)
		}
		switch {
		case msg == "booting":
			l.locked = true
		case strings.HasPrefix(msg, "fatal;"), msg == "stopped":
			l.ended = true
			milestone = true
		case strings.HasPrefix(msg, "starting bhyve"), strings.HasPrefix(msg, "bhyve exited"):
			milestone = true
		}
	}
	return milestone
}

// logMessage strips util::log's stamp: `date +'%b %d %T'` up to 1.6,
// `date -Iseconds` from 1.7, then ": ". Neither stamp contains ": ".
func logMessage(line []byte) string {
	if _, msg, ok := bytes.Cut(line, []byte(": ")); ok {
		return string(msg)
	}
	return string(line)
}
