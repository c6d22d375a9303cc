package kea

import (
	"bytes"
	"os"
)

// fileState is what a Watch knows about one open lease file. Files are
// identified by the open descriptor, not by name: LFC renames files
// (current -> .1, .completed -> .2), and holding the descriptor keeps the
// inode from being reused by a new file, so "same inode, not shorter" really
// means "same file, appended to" (Kea never rewrites a lease file in place;
// lfc_controller.cc only renames and unlinks).
type fileState struct {
	f      *os.File
	info   os.FileInfo
	name   string
	offset int64 // bytes consumed: the file up to the last complete line
	line   int   // lines consumed
	hdr    *header

	// searched holds the addresses (raw address fields) whose rows are
	// recorded in last: those carried in from earlier files, for which the
	// whole file is searched, and those discovered here, searched from the
	// row that discovered them on (earlier rows for them are overridden by
	// that row anyway).
	searched map[string]struct{}
	keys     []string // searched, for the prefix compare in match
	// discovered holds the addresses of rows that contain the MAC.
	discovered map[string]struct{}
	last       map[string]*rowRec // last row per searched address
	// orphans are rows containing the MAC that have no address field; they
	// cannot be overridden, so each one is an error.
	orphans []*rowRec
}

// rowRec is a copy of one row, parsed on demand.
type rowRec struct {
	file *fileState
	line int
	raw  []byte

	parsed bool
	r      row
	msg    string
}

func (rec *rowRec) parse() (row, string) {
	if !rec.parsed {
		rec.r, rec.msg = parseRow(rec.file.hdr, rec.raw)
		rec.parsed = true
	}
	// The name is looked up now: LFC may have renamed the file since.
	rec.r.lease.File, rec.r.lease.Line = rec.file.name, rec.line
	return rec.r, rec.msg
}

func newFileState(f *os.File, info os.FileInfo, name string) *fileState {
	s := &fileState{f: f, info: info, name: name}
	s.reset(nil)
	return s
}

// reset forgets everything read so the file is read again from the start,
// searching for the carried addresses.
func (s *fileState) reset(carried map[string]struct{}) {
	s.offset, s.line, s.hdr = 0, 0, nil
	s.searched = map[string]struct{}{}
	s.keys = nil
	s.discovered = map[string]struct{}{}
	s.last = map[string]*rowRec{}
	s.orphans = nil
	for k := range carried {
		s.search(k)
	}
}

func (s *fileState) search(k string) {
	if _, ok := s.searched[k]; !ok {
		s.searched[k] = struct{}{}
		s.keys = append(s.keys, k)
	}
}

var newline = []byte{'\n'}

// feed processes complete lines (region starts at a line start and ends with
// '\n'). Only rows that contain the MAC, and rows for the addresses those
// rows name, are copied; everything else is skipped at memchr speed.
func (s *fileState) feed(region []byte, w *Watch) *ParseError {
	for s.hdr == nil && len(region) > 0 {
		i := bytes.IndexByte(region, '\n')
		line := region[:i]
		region = region[i+1:]
		s.line++
		if len(line) == 0 {
			continue // CSVFile::next skips blank lines, the header's too
		}
		h, msg := parseHeader(line)
		if msg != "" {
			return &ParseError{File: s.name, Line: s.line, Msg: msg}
		}
		s.hdr = h
	}
	if len(region) == 0 {
		return nil
	}
	w.sampleFinder(region)

	// Discover addresses first so that the walk below already records the
	// rows that discovered them.
	base := s.line
	for off := 0; off < len(region); {
		j := w.finder.index(region[off:])
		if j < 0 {
			break
		}
		j += off
		ls := bytes.LastIndexByte(region[:j], '\n') + 1
		le := j + bytes.IndexByte(region[j:], '\n')
		line := region[ls:le]
		if key, ok := s.hdr.keyOf(line); ok {
			k := string(key)
			s.discovered[k] = struct{}{}
			s.search(k)
		} else {
			n := base + 1 + bytes.Count(region[:ls], newline)
			s.orphans = append(s.orphans, &rowRec{file: s, line: n, raw: bytes.Clone(line)})
		}
		off = le + 1
	}

	if len(s.keys) == 0 {
		s.line += bytes.Count(region, newline)
		return nil
	}
	for len(region) > 0 {
		i := bytes.IndexByte(region, '\n')
		line := region[:i]
		region = region[i+1:]
		s.line++
		if len(line) == 0 {
			continue
		}
		if k, ok := s.match(line); ok {
			s.last[k] = &rowRec{file: s, line: s.line, raw: bytes.Clone(line)}
		}
	}
	return nil
}

// match returns the searched address the row belongs to, if any.
func (s *fileState) match(line []byte) (string, bool) {
	if s.hdr.address == 0 && len(s.keys) <= 8 {
		// Kea's own layout: the address is the first field, so a prefix
		// compare per row is enough and nothing is split.
		for _, k := range s.keys {
			if len(line) >= len(k) && string(line[:len(k)]) == k &&
				(len(line) == len(k) || line[len(k)] == ',') {
				return k, true
			}
		}
		return "", false
	}
	key, ok := s.hdr.keyOf(line)
	if !ok {
		return "", false
	}
	if _, ok := s.searched[string(key)]; ok {
		return string(key), true
	}
	return "", false
}
