// Package sysrc reproduces FreeBSD's sysrc(8) for the rc.conf-style files
// vm-bhyve keeps guest configuration in (NAME.conf). The semantics follow
// usr.sbin/sysrc: the value is what sh(1) would see after sourcing the files
// (last assignment wins), a set rewrites the last assignment in place keeping
// its quote style, and an unknown name is appended as name="value".
package sysrc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var validName = regexp.MustCompile(`^[0-9A-Za-z_]*$`)

func assignRe(name string) *regexp.Regexp {
	return regexp.MustCompile(`^[[:space:]]*` + regexp.QuoteMeta(name) + `=`)
}

// Get returns the value of name after "sourcing" files in order.
func Get(files []string, name string) (string, bool, error) {
	var val string
	found := false
	vars := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("sysrc: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			n, v, ok := parseAssignment(line, vars)
			if !ok {
				continue
			}
			vars[n] = v
			if n == name {
				val, found = v, true
			}
		}
	}
	return val, found, nil
}

var paramRe = regexp.MustCompile(`^\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)`)

// expand reads a $NAME or ${NAME} at s and returns its value (empty if
// unset, as in the clean environment sysrc sources rc.conf in) and length.
func expand(s string, vars map[string]string) (string, int) {
	m := paramRe.FindString(s)
	if m == "" {
		return "$", 1
	}
	return vars[strings.Trim(m[1:], "{}")], len(m)
}

// parseAssignment understands the subset of sh(1) that rc.conf files use:
// NAME=word where word mixes unquoted, 'single' and "double" quoted parts.
func parseAssignment(line string, vars map[string]string) (string, string, bool) {
	s := strings.TrimLeft(line, " \t")
	eq := strings.IndexByte(s, '=')
	if eq <= 0 {
		return "", "", false
	}
	name := s[:eq]
	if !validName.MatchString(name) || name[0] >= '0' && name[0] <= '9' {
		return "", "", false
	}
	var out strings.Builder
	rest := s[eq+1:]
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(rest[i+1:], '\'')
			if j < 0 {
				out.WriteString(rest[i+1:])
				return name, out.String(), true
			}
			out.WriteString(rest[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			i++
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) && strings.ContainsRune("\"\\$`", rune(rest[i+1])) {
					i++
				} else if rest[i] == '$' {
					v, n := expand(rest[i:], vars)
					out.WriteString(v)
					i += n - 1
					continue
				}
				out.WriteByte(rest[i])
			}
		case c == '\\' && i+1 < len(rest):
			i++
			out.WriteByte(rest[i])
		case c == '$':
			v, n := expand(rest[i:], vars)
			out.WriteString(v)
			i += n - 1
		case c == ' ' || c == '\t' || c == ';' || c == '#':
			return name, out.String(), true
		default:
			out.WriteByte(c)
		}
	}
	return name, out.String(), true
}

// find returns the file holding the effective last assignment (searching the
// files in reverse order, like f_sysrc_find).
func find(files []string, name string) (string, error) {
	re := assignRe(name)
	for i := len(files) - 1; i >= 0; i-- {
		b, err := os.ReadFile(files[i])
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("sysrc: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if re.MatchString(line) {
				return files[i], nil
			}
		}
	}
	return "", nil
}

// Set assigns name=value the way f_sysrc_set does.
func Set(files []string, name, value string) error {
	if len(files) == 0 {
		return errors.New("sysrc: no file to operate on")
	}
	file, err := find(files, name)
	if err != nil {
		return err
	}
	if file == "" {
		return appendAssignment(files[0], name, value)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("sysrc: %w", err)
	}
	content := string(b)
	if content != "" && !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	lines := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
	re := assignRe(name)
	appendNew := false
	for i := len(lines) - 1; i >= 0; i-- {
		loc := re.FindStringIndex(lines[i])
		if loc == nil {
			continue
		}
		line, ok := rewriteValue(lines[i], loc[1], value)
		if !ok {
			// A value starting with `, $ or \ was not written by sysrc; the
			// real awk leaves it alone and appends a fresh assignment.
			appendNew = true
		} else {
			lines[i] = line
		}
		break
	}
	out := strings.Join(lines, "\n") + "\n"
	if appendNew {
		out += name + "=\"" + value + "\"\n"
	}
	return writeKeepingMode(file, out)
}

// rewriteValue reproduces f_sysrc_set_awk on one line: replace the value
// right after "NAME=" keeping its quoting and anything after it.
func rewriteValue(line string, at int, value string) (string, bool) {
	prefix, rest := line[:at], line[at:]
	if rest == "" {
		return prefix + `"` + value + `"`, true
	}
	t1 := rest[:1]
	t2 := t1
	switch {
	case strings.ContainsAny(t1, "`$\\"):
		return line, false
	case t1 == "'":
		end := strings.IndexByte(rest[1:], '\'')
		if end < 0 {
			rest, t2 = "", ""
		} else {
			rest = rest[1+end+1:]
		}
	case t1 == `"`:
		i := 1
		for i < len(rest) && rest[i] != '"' {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
			}
			i++
		}
		if i >= len(rest) {
			rest, t2 = "", ""
		} else {
			rest = rest[i+1:]
		}
	case t1 == " " || t1 == "\t" || t1 == ";":
		t1, t2 = `"`, `"`
	default:
		t1, t2 = `"`, `"`
		end := strings.IndexAny(rest, " \t")
		if end < 0 {
			rest = ""
		} else {
			rest = rest[end:]
		}
	}
	return prefix + t1 + value + t2 + rest, true
}

func appendAssignment(file, name, value string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("sysrc: %w", err)
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > 0 {
		// sysrc adds the missing final newline before appending, otherwise
		// the new key would be glued to the last line.
		last := make([]byte, 1)
		if r, err := os.Open(file); err == nil {
			_, _ = r.ReadAt(last, info.Size()-1)
			r.Close()
		}
		if last[0] != '\n' {
			if _, err := f.WriteString("\n"); err != nil {
				return fmt.Errorf("sysrc: %w", err)
			}
		}
	}
	if _, err := f.WriteString(name + "=\"" + value + "\"\n"); err != nil {
		return fmt.Errorf("sysrc: %w", err)
	}
	return nil
}

func writeKeepingMode(file, content string) error {
	mode := os.FileMode(0o644)
	if info, err := os.Stat(file); err == nil {
		mode = info.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".sysrc.*")
	if err != nil {
		return fmt.Errorf("sysrc: %w", err)
	}
	_, werr := tmp.WriteString(content)
	if err := errors.Join(werr, tmp.Close(), os.Chmod(tmp.Name(), mode)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("sysrc: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("sysrc: %w", err)
	}
	return nil
}

// Delete removes every assignment of name from every file (f_sysrc_delete).
func Delete(files []string, name string) error {
	re := assignRe(name)
	for _, file := range files {
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sysrc: %w", err)
		}
		var kept []string
		found := false
		for _, line := range strings.SplitAfter(string(b), "\n") {
			if line == "" {
				continue
			}
			if re.MatchString(line) {
				found = true
				continue
			}
			if !strings.HasSuffix(line, "\n") {
				line += "\n"
			}
			kept = append(kept, line)
		}
		if !found {
			continue
		}
		if err := writeKeepingMode(file, strings.Join(kept, "")); err != nil {
			return err
		}
	}
	return nil
}

// splitList splits a list value for += and -= the way sysrc does: the first
// character of the operand is the delimiter unless it is alphanumeric, '.',
// '/' or whitespace, in which case words are separated by whitespace.
func splitList(operand string) (string, func(string) []string) {
	if operand == "" {
		return " ", strings.Fields
	}
	d := operand[:1]
	if strings.ContainsAny(d, " \t\n") || isWordChar(d[0]) {
		return " ", strings.Fields
	}
	return d, func(s string) []string {
		var out []string
		for _, w := range strings.Split(s, d) {
			if w != "" {
				out = append(out, w)
			}
		}
		return out
	}
}

func isWordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '/'
}

func appendValue(before, operand string) string {
	delim, split := splitList(operand)
	have := split(before)
	out := before
	for _, a := range split(operand) {
		dup := false
		for _, b := range have {
			if a == b {
				dup = true
				break
			}
		}
		if !dup {
			out += delim + a
		}
	}
	return strings.TrimPrefix(out, delim)
}

func removeValue(before, operand string) string {
	delim, split := splitList(operand)
	remove := split(operand)
	var buf bytes.Buffer
	for _, b := range split(before) {
		drop := false
		for _, r := range remove {
			if r == b {
				drop = true
				break
			}
		}
		if !drop {
			buf.WriteString(delim + b)
		}
	}
	return strings.TrimPrefix(buf.String(), delim)
}
