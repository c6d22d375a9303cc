package kea

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea/keatest"
)

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	require.NoError(t, err)
	_, err = f.WriteString(s)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func noise(n int) string {
	var b bytes.Buffer
	_, err := keatest.WriteFile(&b, keatest.Options{Version: keatest.V22, Rows: n, Now: testNow, Seed: 3})
	if err != nil {
		panic(err)
	}
	return b.String()
}

func TestWatchReadsOnlyAppendedBytes(t *testing.T) {
	base := noise(2000)
	path := writeSet(t, map[string]string{"": base})
	w := NewReader(path).Watch(mustMAC(t, testMAC))
	defer w.Close()
	ctx := context.Background()

	_, err := w.Poll(ctx, testNow)
	require.ErrorIs(t, err, ErrNoLease)
	require.Equal(t, int64(len(base)), w.BytesRead())

	_, err = w.Poll(ctx, testNow)
	require.ErrorIs(t, err, ErrNoLease)
	require.Equal(t, int64(len(base)), w.BytesRead(), "an unchanged file is not read again")

	mine := r22("10.0.0.5", testMAC, 3600, time.Hour, 0) + "\n"
	half := len(mine) / 2
	appendTo(t, path, mine[:half])
	_, err = w.Poll(ctx, testNow)
	require.ErrorIs(t, err, ErrNoLease, "a half-written row is not read as a row")
	require.Equal(t, int64(len(base)+half), w.BytesRead())

	appendTo(t, path, mine[half:])
	l, err := w.Poll(ctx, testNow)
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.5", l.Address.String())
	assert.Equal(t, 2002, l.Line)
	// The half row is read again with its rest; nothing else is.
	require.Equal(t, int64(len(base)+half+len(mine)), w.BytesRead())

	other := r22("10.0.0.5", otherMC, 3600, time.Hour, 0) + "\n"
	appendTo(t, path, other)
	_, err = w.Poll(ctx, testNow)
	require.ErrorIs(t, err, ErrNoLease, "the address moved to another MAC")
	require.Equal(t, int64(len(base)+half+len(mine)+len(other)), w.BytesRead())
}

func TestWatchFollowsLFCRotation(t *testing.T) {
	ctx := context.Background()
	mine := r22("10.0.0.5", testMAC, 3600, time.Hour, 0)
	cur := lines(h22, r22("10.0.0.9", otherMC, 3600, time.Hour, 0), mine)
	path := writeSet(t, map[string]string{"": cur})
	w := NewReader(path).Watch(mustMAC(t, testMAC))
	defer w.Close()

	l, err := w.Poll(ctx, testNow)
	require.NoError(t, err)
	require.Equal(t, ParseLocation{path, 3}, loc(l))
	read := w.BytesRead()

	// The server starts LFC: current -> .1, and a new current with a header
	// (Memfile_LeaseMgr::lfcExecute). .1 is the file already read.
	require.NoError(t, os.Rename(path, path+".1"))
	require.NoError(t, os.WriteFile(path, []byte(h22+"\n"), 0o644))
	l, err = w.Poll(ctx, testNow)
	require.NoError(t, err)
	require.Equal(t, ParseLocation{path + ".1", 3}, loc(l))
	require.Equal(t, read+int64(len(h22)+1), w.BytesRead(), "only the new current file is read")
	read = w.BytesRead()

	// kea-lfc writes .completed from .2 and .1; then removes .2 and .1 and
	// renames .completed to .2 (lfc_controller.cc).
	completed := lines(h22, mine)
	require.NoError(t, os.WriteFile(path+".completed", []byte(completed), 0o644))
	l, err = w.Poll(ctx, testNow)
	require.NoError(t, err)
	require.Equal(t, ParseLocation{path + ".completed", 2}, loc(l))
	require.Equal(t, read+int64(len(completed)), w.BytesRead())
	read = w.BytesRead()

	require.NoError(t, os.Remove(path+".1"))
	require.NoError(t, os.Rename(path+".completed", path+".2"))
	l, err = w.Poll(ctx, testNow)
	require.NoError(t, err)
	require.Equal(t, ParseLocation{path + ".2", 2}, loc(l))
	require.Equal(t, read, w.BytesRead(), "a renamed file is not read again")

	// The server renews the lease into the new current file.
	renew := r22("10.0.0.5", testMAC, 3600, 2*time.Hour, 0)
	appendTo(t, path, renew+"\n")
	l, err = w.Poll(ctx, testNow)
	require.NoError(t, err)
	require.Equal(t, ParseLocation{path, 2}, loc(l))
	require.Equal(t, read+int64(len(renew)+1), w.BytesRead())
}

// ParseLocation is a file and line, for compact assertions.
type ParseLocation struct {
	File string
	Line int
}

func loc(l Lease) ParseLocation { return ParseLocation{l.File, l.Line} }

func TestWatchRereadsAShrunkFile(t *testing.T) {
	ctx := context.Background()
	path := writeSet(t, map[string]string{"": lines(h22, r22("10.0.0.9", otherMC, 3600, time.Hour, 0), r22("10.0.0.5", testMAC, 3600, time.Hour, 0))})
	w := NewReader(path).Watch(mustMAC(t, testMAC))
	defer w.Close()
	_, err := w.Poll(ctx, testNow)
	require.NoError(t, err)

	// Rewritten in place and shorter: not Kea's doing, but must not be
	// read from the old offset.
	short := lines(h22, r22("10.0.0.6", testMAC, 60, time.Hour, 0))
	require.NoError(t, os.WriteFile(path, []byte(short), 0o644))
	before := w.BytesRead()
	l, err := w.Poll(ctx, testNow)
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.6", l.Address.String())
	assert.Equal(t, before+int64(len(short)), w.BytesRead())
}

func TestWatchSearchesLaterFilesForAddressesFoundInNewSiblings(t *testing.T) {
	ctx := context.Background()
	// The current file moves 10.0.0.5 to another MAC; polled before .1
	// existed, that row mentioned nothing the Watch looked for.
	path := writeSet(t, map[string]string{"": lines(h22, r22("10.0.0.5", otherMC, 3600, time.Hour, 0))})
	w := NewReader(path).Watch(mustMAC(t, testMAC))
	defer w.Close()
	_, err := w.Poll(ctx, testNow)
	require.ErrorIs(t, err, ErrNoLease)

	require.NoError(t, os.WriteFile(path+".1", []byte(lines(h22, r22("10.0.0.5", testMAC, 3600, time.Hour, 0))), 0o644))
	_, err = w.Poll(ctx, testNow)
	require.ErrorIs(t, err, ErrNoLease, "the current file's row for 10.0.0.5 still overrides .1")
}

func TestWait(t *testing.T) {
	t.Run("returns once another goroutine appends the row", func(t *testing.T) {
		path := writeSet(t, map[string]string{"": noise(100)})
		w := NewReader(path).Watch(mustMAC(t, testMAC))
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		written := make(chan time.Time, 1)
		go func() {
			time.Sleep(200 * time.Millisecond)
			appendTo(t, path, r22("10.0.0.5", testMAC, 3600, 100*365*24*time.Hour, 0)+"\n")
			written <- time.Now()
		}()
		l, err := Wait(ctx, w)
		seen := time.Now()
		require.NoError(t, err)
		assert.Equal(t, "10.0.0.5", l.Address.String())
		t.Logf("lease seen %v after it was written", seen.Sub(<-written))
	})

	t.Run("waits for the lease file to appear", func(t *testing.T) {
		path := writeSet(t, map[string]string{})
		w := NewReader(path).Watch(mustMAC(t, testMAC))
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		go func() {
			time.Sleep(50 * time.Millisecond)
			require.NoError(t, os.WriteFile(path, []byte(lines(h22, r22("10.0.0.5", testMAC, 3600, 100*365*24*time.Hour, 0))), 0o644))
		}()
		l, err := Wait(ctx, w)
		require.NoError(t, err)
		assert.Equal(t, "10.0.0.5", l.Address.String())
	})

	t.Run("says what it saw when the deadline passes", func(t *testing.T) {
		path := writeSet(t, map[string]string{
			".1": lines(h22, r22("10.0.0.5", testMAC, 3600, -time.Hour, 0)),
			"":   lines(h22)})
		w := NewReader(path).Watch(mustMAC(t, testMAC))
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := Wait(ctx, w)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, ErrNoLease)
		msg := err.Error()
		assert.True(t, strings.HasPrefix(msg, "kea: no lease for 58:9c:fc:0a:0b:0c in "+path+" (+ .1) after "), msg)
		assert.Contains(t, msg, "context deadline exceeded")
		assert.Contains(t, msg, "10.0.0.5 expired at "+testNow.Add(-time.Hour).UTC().Format(time.RFC3339)+" ("+path+".1:2)")
	})

	t.Run("reports an unreadable row at the deadline", func(t *testing.T) {
		path := writeSet(t, map[string]string{"": lines(h22, "10.0.0.5,58:9c:fc:0a:0b:0c,,3600,abc,1,0,0,,0,")})
		w := NewReader(path).Watch(mustMAC(t, testMAC))
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := Wait(ctx, w)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var perr *ParseError
		require.ErrorAs(t, err, &perr)
		assert.Equal(t, `expire "abc" is not a number`, perr.Msg)
		assert.Contains(t, err.Error(), "; last poll: kea: cannot tell the lease of 58:9c:fc:0a:0b:0c: "+path+`:2: expire "abc" is not a number`)
	})

	t.Run("says when no row mentions the MAC", func(t *testing.T) {
		path := writeSet(t, map[string]string{"": noise(10)})
		w := NewReader(path).Watch(mustMAC(t, testMAC))
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err := Wait(ctx, w)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, ErrNoLease)
		assert.Regexp(t, `^kea: no lease for 58:9c:fc:0a:0b:0c in `+regexp.QuoteMeta(path)+` after \d+ms: context deadline exceeded; no row mentions it$`, err.Error())
	})
}
