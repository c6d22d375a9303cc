// Package moa is a sandbox stand-in for gitlab.com/gitlab-org/moa, the
// expression language of GitLab job inputs (${{ job.inputs.x }}), whose
// source this build machine's module proxy refuses.
//
// It does not evaluate anything. ParseTemplate accepts text without an
// interpolation as a literal and refuses text with one, so a job that would
// need moa fails with an error naming this stand-in instead of running with
// the expression left unexpanded. See ci/standins/moa/README.md.
package moa

import (
	"fmt"
	"strings"

	"gitlab.com/gitlab-org/moa/ast"
)

// path is the module this package stands in for, for error messages.
const path = "gitlab.com/gitlab-org/moa"

// interpolationOpen starts an interpolation in moa's template syntax.
const interpolationOpen = "${{"

// ParseTemplate parses text as a literal. Text that contains an
// interpolation is refused: the stand-in cannot evaluate it.
func ParseTemplate(text string) (ast.Expr, error) {
	if at := strings.Index(text, interpolationOpen); at >= 0 {
		return nil, fmt.Errorf("sandbox stand-in for %s: job input interpolation is not available in this build (%q at offset %d)",
			path, interpolationOpen, at)
	}
	return &ast.Text{Value: text}, nil
}

// EscapeTemplate returns text unchanged. Upstream escapes the concrete
// step's configuration so step-runner does not interpolate it; the stand-in
// step-runner never runs a step, so nothing reads the escaped form.
func EscapeTemplate(text string) string {
	return text
}
