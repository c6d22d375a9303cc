package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/tools/go/packages"
)

// Options says what to type-check and how.
type Options struct {
	// Dir is the root of the module whose packages must be error-free.
	Dir string
	// GoWork is the workspace file that stands in for the modules the proxy
	// refuses. Empty means the go command's default.
	GoWork string
	// Patterns are the package patterns to check, relative to Dir.
	Patterns []string
}

// Diagnostic is one type error located in our own code.
type Diagnostic struct {
	File string // absolute path
	Line int
	Col  int
	Msg  string
}

func (d Diagnostic) String() string {
	return fmt.Sprintf("%s:%d:%d: %s", d.File, d.Line, d.Col, d.Msg)
}

// Result is what a check found.
type Result struct {
	Ours     []Diagnostic // errors in packages of the main module(s): each fails the gate
	Ignored  int          // errors in upstream packages, caused by the stand-in modules
	Packages int          // our packages checked, test variants included
}

// Check type-checks the packages (with their _test.go files) from source,
// together with every dependency, against upstream's real code. go/packages
// records errors per package and still type-checks dependents, so an
// upstream package broken by an empty stand-in module does not hide errors in
// ours; only identifiers whose type comes from a stand-in become invalid.
func Check(opts Options) (Result, error) {
	env := os.Environ()
	if opts.GoWork != "" {
		abs, err := filepath.Abs(opts.GoWork)
		if err != nil {
			return Result{}, err
		}
		env = append(env, "GOWORK="+abs)
	}
	cfg := &packages.Config{
		Mode:  packages.LoadAllSyntax | packages.NeedModule,
		Dir:   opts.Dir,
		Env:   env,
		Tests: true,
	}
	roots, err := packages.Load(cfg, opts.Patterns...)
	if err != nil {
		return Result{}, fmt.Errorf("load %v: %w", opts.Patterns, err)
	}
	if len(roots) == 0 {
		return Result{}, fmt.Errorf("no packages match %v in %s", opts.Patterns, opts.Dir)
	}

	var res Result
	seen := map[string]bool{}
	packages.Visit(roots, nil, func(p *packages.Package) {
		ours := p.Module != nil && p.Module.Main
		if ours {
			res.Packages++
		}
		for _, e := range p.Errors {
			// The same file is checked once per test variant; count each error once.
			key := e.Pos + "\x00" + e.Msg
			if seen[key] {
				continue
			}
			seen[key] = true
			if !ours {
				res.Ignored++
				continue
			}
			res.Ours = append(res.Ours, diagnostic(e, p))
		}
	})
	sort.Slice(res.Ours, func(i, j int) bool {
		a, b := res.Ours[i], res.Ours[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	return res, nil
}

func diagnostic(e packages.Error, p *packages.Package) Diagnostic {
	d := Diagnostic{Msg: e.Msg}
	// Pos is "file:line:col", "file:line" or empty (package-level errors).
	parts := strings.Split(e.Pos, ":")
	if len(parts) >= 2 {
		var line, col int
		if _, err := fmt.Sscan(parts[1], &line); err == nil {
			d.File, d.Line = parts[0], line
			if len(parts) >= 3 {
				if _, err := fmt.Sscan(parts[2], &col); err == nil {
					d.Col = col
				}
			}
		}
	}
	if d.File == "" {
		d.File = p.PkgPath
	}
	return d
}
