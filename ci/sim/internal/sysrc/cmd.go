package sysrc

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// Main runs `sysrc ARGS` and returns the exit status. argv0 is the path the
// command was invoked as (sysrc prints its basename); defaultFiles stand in
// for rc_conf_files when no -f is given.
func Main(argv0 string, args []string, stdout, stderr io.Writer, defaultFiles []string) int {
	pgm := filepath.Base(argv0)
	usage := func() int {
		fmt.Fprintf(stderr, "Usage: %s [OPTIONS] %s\n", pgm,
			"{name[[+|-]=value] ... | -a | -A | -l | -L [name ...]}")
		fmt.Fprintf(stderr, "Try `%s --help' for more information.\n", pgm)
		return 1
	}
	if len(args) == 0 {
		return usage()
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		switch a {
		case "--help":
			fmt.Fprintf(stderr, "Usage: %s [OPTIONS] name[[+|-]=value] ...\n", pgm)
			return 1
		case "--version":
			fmt.Fprintln(stdout, "7.3 (bhyve-sim)")
			return 1
		}
	}

	var files []string
	filesSet := false
	var showName, showValue, quiet, ignoreUnknown, del, showEquals = true, true, false, false, false, false
	i := 0
	// getopts semantics: options stop at the first operand or "--".
parse:
	for i < len(args) {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			switch c := a[j]; c {
			case 'f':
				var v string
				if j+1 < len(a) {
					v = a[j+1:]
				} else if i+1 < len(args) {
					i++
					v = args[i]
				} else {
					fmt.Fprintf(stderr, "No arg for -%c option\n", c)
					return usage()
				}
				files = append(files, strings.Fields(v)...)
				filesSet = true
				i++
				continue parse
			case 'n':
				showName = false
			case 'N':
				showValue = false
			case 'q':
				quiet = true
			case 'i':
				ignoreUnknown = true
			case 'x', 'X':
				del = true
			case 'e':
				showEquals = true
			case 'h':
				return usage()
			case 'a', 'A', 'c', 'd', 'D', 'E', 'F', 'j', 'l', 'L', 'R', 's', 'v':
				fmt.Fprintf(stderr, "%s: option -%c is not supported by the bhyve simulator\n", pgm, c)
				return 1
			default:
				fmt.Fprintf(stderr, "Illegal option -%c\n", c)
				return usage()
			}
		}
		i++
	}
	operands := args[i:]
	if !filesSet {
		files = defaultFiles
	}
	for _, op := range operands {
		name := op
		if k := strings.Index(name, ":"); k >= 0 && k+1 < len(name) && strings.ContainsAny(name[k+1:k+2], "+=-") {
			name = name[:k]
		}
		if k := strings.IndexAny(name, "%#+=-"); k >= 0 {
			name = name[:k]
		}
		if !validName.MatchString(name) {
			fmt.Fprintf(stderr, "%s: %s: name contains characters not allowed in shell\n", pgm, name)
			return 1
		}
	}
	if len(operands) == 0 {
		return usage()
	}

	sep := ": "
	if !showName {
		showEquals = false
	}
	if !showValue {
		showName, showEquals = true, false
	}
	if showEquals {
		sep = `="`
	}
	q := func(s string) string {
		if showEquals {
			return s
		}
		return ""
	}

	status := 0
	for _, op := range operands {
		name, value, hasValue := strings.Cut(op, "=")
		mode := "assign"
		switch {
		case strings.HasSuffix(name, "+"):
			mode, name = "append", strings.TrimSuffix(name, "+")
		case strings.HasSuffix(name, "-"):
			mode, name = "remove", strings.TrimSuffix(name, "-")
		}
		if hasValue {
			if del {
				if err := Delete(files, name); err != nil {
					fmt.Fprintln(stderr, err)
					status = 1
				}
				continue
			}
			before, _, err := Get(files, name)
			if err != nil {
				fmt.Fprintln(stderr, err)
				status = 1
				continue
			}
			newVal := value
			switch mode {
			case "append":
				newVal = appendValue(before, value)
			case "remove":
				newVal = removeValue(before, value)
			}
			if !showValue {
				fmt.Fprintln(stdout, name)
				if err := Set(files, name, newVal); err != nil {
					fmt.Fprintln(stderr, err)
					status = 1
				}
				continue
			}
			if err := Set(files, name, newVal); err != nil {
				fmt.Fprintln(stderr, err)
				status = 1
				continue
			}
			after, _, _ := Get(files, name)
			prefix := ""
			if showName {
				prefix = name + sep
			}
			fmt.Fprintf(stdout, "%s%s%s -> %s%s%s\n", prefix, before, q(`" #`), q(`"`), after, q(`"`))
			continue
		}
		val, ok, err := Get(files, name)
		if err != nil {
			fmt.Fprintln(stderr, err)
			status = 1
			continue
		}
		if !ok {
			if !ignoreUnknown && !quiet {
				fmt.Fprintf(stderr, "%s: unknown variable '%s'\n", pgm, name)
			}
			status = 1
			continue
		}
		if del {
			if err := Delete(files, name); err != nil {
				fmt.Fprintln(stderr, err)
				status = 1
			}
			continue
		}
		if !showValue {
			fmt.Fprintln(stdout, name)
			continue
		}
		prefix := ""
		if showName {
			prefix = name + sep
		}
		fmt.Fprintf(stdout, "%s%s%s\n", prefix, val, q(`"`))
	}
	return status
}
