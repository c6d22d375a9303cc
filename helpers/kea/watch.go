package kea

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// Reader looks up leases in one Kea DHCPv4 memfile lease file and its LFC
// siblings. It holds no state, so one Reader serves concurrent lookups.
type Reader struct {
	path  string
	chunk int // read buffer size; tests shrink it to cut lines at every byte
}

// NewReader returns a Reader for the current lease file, e.g.
// /var/db/kea/kea-leases4.csv. Nothing is opened until a lookup.
func NewReader(path string) *Reader {
	return &Reader{path: path, chunk: 1 << 20}
}

// Lookup returns the current lease for mac: the folded row for the MAC in
// state default whose expire is after now. It returns an error wrapping
// ErrNoLease if there is none, and a wrapped *ParseError if a row that could
// decide the answer cannot be read.
func (r *Reader) Lookup(ctx context.Context, mac net.HardwareAddr, now time.Time) (Lease, error) {
	w := r.Watch(mac)
	defer w.Close()
	return w.Poll(ctx, now)
}

// Watch prepares repeated lookups for one MAC that read only what was
// appended since the previous poll. A Watch holds the lease files open
// between polls; Close it when done. It is not safe for concurrent use.
func (r *Reader) Watch(mac net.HardwareAddr) *Watch {
	return &Watch{r: r, mac: mac, needle: []byte(mac.String())}
}

// Watch polls the lease files for one MAC; see Reader.Watch.
type Watch struct {
	r      *Reader
	mac    net.HardwareAddr
	needle []byte // the MAC as Kea writes it: lowercase, two digits, colons

	finder      *finder
	finderFinal bool

	files     []*fileState // in Kea's load order, as of the last poll
	buf       []byte
	bytesRead int64
}

// BytesRead returns how many bytes this Watch has read from lease files.
func (w *Watch) BytesRead() int64 { return w.bytesRead }

// Close closes the lease files the Watch holds open.
func (w *Watch) Close() error {
	var errs []error
	for _, s := range w.files {
		errs = append(errs, s.f.Close())
	}
	w.files = nil
	return errors.Join(errs...)
}

// sampleFinderBytes is how much data the finder's byte statistics are taken
// from; more would not change the choice, less could on odd files.
const sampleFinderBytes = 64 << 10

func (w *Watch) sampleFinder(region []byte) {
	if w.finderFinal {
		return
	}
	sample := region[:min(len(region), sampleFinderBytes)]
	w.finder = newFinder(w.needle, sample)
	w.finderFinal = len(sample) == sampleFinderBytes
}

// Poll reads what changed since the previous poll and returns the current
// lease for the MAC, or an error wrapping ErrNoLease until there is one.
func (w *Watch) Poll(ctx context.Context, now time.Time) (Lease, error) {
	if len(w.mac) == 0 {
		return Lease{}, errors.New("kea: empty MAC address")
	}
	// LFC may rename files while they are read. If the set of files changed
	// during the pass, read again: files already read are kept by inode, so
	// a retry costs only what is new. After a few tries the answer is used
	// anyway; a Wait polls again soon.
	for attempt := 0; attempt < 3; attempt++ {
		stable, err := w.refresh(ctx)
		if err != nil {
			return Lease{}, err
		}
		if stable {
			break
		}
	}
	return w.decide(now)
}

// probe is what one candidate file name referred to when it was opened.
type probe struct {
	name string
	info os.FileInfo // nil: absent
}

// refresh brings the Watch's files up to date and reports whether the set of
// files was the same after reading as before.
func (w *Watch) refresh(ctx context.Context) (stable bool, err error) {
	old := w.files
	var next []*fileState
	var probes []probe
	defer func() {
		for _, s := range old {
			if !slices.Contains(next, s) {
				s.f.Close()
			}
		}
		w.files = next
	}()

	// open returns the state for name, reusing one from the last poll when
	// the name still refers to the same file; nil if the file is absent.
	open := func(name string) (*fileState, error) {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			probes = append(probes, probe{name: name})
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("kea: %w", err)
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("kea: %w", err)
		}
		probes = append(probes, probe{name: name, info: info})
		for _, s := range old {
			if os.SameFile(s.info, info) && !slices.Contains(next, s) {
				f.Close()
				s.name = name
				return s, nil
			}
		}
		return newFileState(f, info, name), nil
	}

	// Kea's load order (Memfile_LeaseMgr::loadLeasesFromFiles): the LFC
	// result if it exists, which already holds .2 and .1 merged; otherwise
	// .2 (previous) then .1 (input); then always the current file.
	path := w.r.path
	s, err := open(path + ".completed")
	if err != nil {
		return false, err
	}
	if s != nil {
		next = append(next, s)
	} else {
		for _, suffix := range []string{".2", ".1"} {
			s, err := open(path + suffix)
			if err != nil {
				return false, err
			}
			if s != nil {
				next = append(next, s)
			}
		}
	}
	s, err = open(path)
	if err != nil {
		return false, err
	}
	if s == nil {
		return false, fmt.Errorf("kea: lease file %s: %w", path, fs.ErrNotExist)
	}
	next = append(next, s)

	carried := map[string]struct{}{}
	for _, s := range next {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("kea: reading %s: %w", s.name, err)
		}
		info, err := s.f.Stat()
		if err != nil {
			return false, fmt.Errorf("kea: %w", err)
		}
		// Re-read the whole file if it shrank (not Kea's doing, but then
		// nothing read before can be trusted) or if an earlier file now
		// names an address this file was not searched for from its start.
		if info.Size() < s.offset || !subset(carried, s.searched) {
			s.reset(carried)
		}
		if err := w.read(ctx, s); err != nil {
			var perr *ParseError
			if errors.As(err, &perr) {
				s.reset(carried) // read the header again next time
			}
			return false, err
		}
		for k := range s.discovered {
			carried[k] = struct{}{}
		}
	}

	for _, p := range probes {
		info, err := os.Stat(p.name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if p.info != nil {
				return false, nil
			}
		case err != nil:
			return false, fmt.Errorf("kea: %w", err)
		case p.info == nil || !os.SameFile(p.info, info):
			return false, nil
		}
	}
	return true, nil
}

func subset(a, b map[string]struct{}) bool {
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// maxLine bounds one line; Kea's rows are a few hundred bytes, so anything
// longer is not a lease file and must not make the reader buffer it all.
const maxLine = 16 << 20

// read feeds the file from where the last read stopped to its end. Bytes of
// a final line without '\n' are read again next time: Kea may be writing it.
func (w *Watch) read(ctx context.Context, s *fileState) error {
	if len(w.buf) < w.r.chunk {
		w.buf = make([]byte, w.r.chunk)
	}
	off, carry := s.offset, 0
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("kea: reading %s: %w", s.name, err)
		}
		if carry == len(w.buf) {
			if carry >= maxLine {
				return &ParseError{File: s.name, Line: s.line + 1, Msg: fmt.Sprintf("line is longer than %d bytes", maxLine)}
			}
			w.buf = append(w.buf, make([]byte, len(w.buf))...)
		}
		n, err := s.f.ReadAt(w.buf[carry:], off)
		w.bytesRead += int64(n)
		off += int64(n)
		data := w.buf[:carry+n]
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			if perr := s.feed(data[:i+1], w); perr != nil {
				return fmt.Errorf("kea: %w", perr)
			}
			s.offset += int64(i + 1)
			carry = copy(w.buf, data[i+1:])
		} else {
			carry = len(data)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("kea: %w", err)
		}
	}
}

// decide folds what the files say about the tracked addresses. For an
// address, Kea's fold (LeaseFileLoader::load) ends with its last row if that
// row has valid_lifetime > 0 and without the address otherwise, whatever
// came before; so the last row per address is all that is needed, and only
// addresses whose rows mention the MAC can end with a row for the MAC.
func (w *Watch) decide(now time.Time) (Lease, error) {
	order := map[*fileState]int{}
	for i, s := range w.files {
		order[s] = i
	}
	tracked := map[string]struct{}{}
	var bad []*rowRec
	for _, s := range w.files {
		bad = append(bad, s.orphans...)
		for k := range s.discovered {
			tracked[k] = struct{}{}
		}
	}
	var finals []*rowRec
	for k := range tracked {
		for i := len(w.files) - 1; i >= 0; i-- {
			if rec, ok := w.files[i].last[k]; ok {
				finals = append(finals, rec)
				break
			}
		}
	}
	pos := func(rec *rowRec) [2]int { return [2]int{order[rec.file], rec.line} }
	for _, rec := range finals {
		if _, msg := rec.parse(); msg != "" {
			bad = append(bad, rec)
		}
	}
	if len(bad) > 0 {
		first := slices.MinFunc(bad, func(a, b *rowRec) int { return cmpPos(pos(a), pos(b)) })
		// An orphan has fewer fields than the header, so parse always
		// has something to say about it.
		_, msg := first.parse()
		return Lease{}, fmt.Errorf("kea: cannot tell the lease of %s: %w", w.mac,
			&ParseError{File: first.file.name, Line: first.line, Msg: msg})
	}
	slices.SortFunc(finals, func(a, b *rowRec) int { return cmpPos(pos(a), pos(b)) })
	var best *Lease
	var stale []string
	for _, rec := range finals {
		r, _ := rec.parse()
		if why := notCurrent(r, w.needle, now); why != "" {
			stale = append(stale, fmt.Sprintf("%s %s (%s:%d)", r.lease.Address, why, rec.file.name, rec.line))
			continue
		}
		if best == nil || !best.Expire.After(r.lease.Expire) {
			best = &r.lease
		}
	}
	if best == nil {
		return Lease{}, &noLeaseError{mac: w.mac, where: w.describeFiles(), stale: stale}
	}
	return *best, nil
}

func cmpPos(a, b [2]int) int {
	if c := cmp.Compare(a[0], b[0]); c != 0 {
		return c
	}
	return cmp.Compare(a[1], b[1])
}

// notCurrent says why a folded row is not the MAC's current lease, or "".
func notCurrent(r row, needle []byte, now time.Time) string {
	switch {
	case r.valid == 0:
		return "released (valid_lifetime 0)"
	case len(r.hwText) != len(needle) || !equalFold([]byte(r.hwText), needle):
		if r.hwText == "" {
			return "has no hwaddr now"
		}
		return "now belongs to " + r.hwText
	case r.lease.State != StateDefault:
		return "is " + r.lease.State.String()
	case !r.lease.Expire.After(now):
		return "expired at " + r.lease.Expire.UTC().Format(time.RFC3339)
	}
	return ""
}

// describeFiles names the files read, e.g. "/var/db/kea/kea-leases4.csv
// (+ .2, .1)".
func (w *Watch) describeFiles() string {
	var sibs []string
	for _, s := range w.files {
		if s.name != w.r.path {
			sibs = append(sibs, strings.TrimPrefix(s.name, w.r.path))
		}
	}
	if len(sibs) == 0 {
		return w.r.path
	}
	return w.r.path + " (+ " + strings.Join(sibs, ", ") + ")"
}

// noLeaseError says what was found instead of a lease.
type noLeaseError struct {
	mac   net.HardwareAddr
	where string
	stale []string
}

func (e *noLeaseError) Error() string {
	return fmt.Sprintf("kea: no current lease for %s in %s", e.mac, e.where) + e.seen()
}

// seen lists the rows for the MAC that are not a current lease.
func (e *noLeaseError) seen() string {
	s := "; no row mentions it"
	if len(e.stale) > 0 {
		const show = 3
		s = "; rows for this MAC: " + strings.Join(e.stale[:min(len(e.stale), show)], "; ")
		if len(e.stale) > show {
			s += fmt.Sprintf("; and %d more", len(e.stale)-show)
		}
	}
	return s
}

func (e *noLeaseError) Unwrap() error { return ErrNoLease }

// Wait polls until w finds a lease or ctx ends. Polls start 5ms apart and
// back off to 50ms, so a lease is seen within tens of milliseconds of Kea
// writing it while an idle wait costs a few stat calls per 50ms (a poll
// reads only appended bytes). Unreadable rows and a missing lease file are
// waited out like a missing lease: Kea may still be starting or about to
// write the row that fixes them. When ctx ends, the error wraps ctx.Err()
// and the last poll's error, which says what was seen.
func Wait(ctx context.Context, w *Watch) (Lease, error) {
	start := time.Now()
	delay := 5 * time.Millisecond
	var last error
	for {
		l, err := w.Poll(ctx, time.Now())
		if err == nil {
			return l, nil
		}
		var perr *ParseError
		if ctx.Err() == nil && !errors.Is(err, ErrNoLease) && !errors.As(err, &perr) && !errors.Is(err, fs.ErrNotExist) {
			return Lease{}, err
		}
		if ctx.Err() == nil { // else err is about the cut-short poll
			last = err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return Lease{}, newWaitError(w, time.Since(start), ctx.Err(), last)
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// waitError is Wait's error: what was waited for, for how long, and what the
// last poll saw. It wraps the context's error and the last poll's.
type waitError struct {
	msg  string
	errs []error
}

func newWaitError(w *Watch, waited time.Duration, ctxErr, last error) *waitError {
	msg := fmt.Sprintf("kea: no lease for %s in %s after %s: %v", w.mac, w.describeFiles(), waited.Round(time.Millisecond), ctxErr)
	var nl *noLeaseError
	switch {
	case errors.As(last, &nl):
		msg += nl.seen()
	case last != nil:
		msg += "; last poll: " + last.Error()
	}
	e := &waitError{msg: msg, errs: []error{ctxErr}}
	if last != nil {
		e.errs = append(e.errs, last)
	}
	return e
}

func (e *waitError) Error() string   { return e.msg }
func (e *waitError) Unwrap() []error { return e.errs }
