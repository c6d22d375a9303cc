// Package expression is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/pkg/api/expression, whose source this
// build machine's module proxy refuses: the evaluator upstream's job inputs
// use. It evaluates only literal text (see the moa stand-in).
package expression

import (
	"fmt"

	"gitlab.com/gitlab-org/moa/ast"
	"gitlab.com/gitlab-org/moa/value"

	"gitlab.com/gitlab-org/step-runner/internal/standin"
)

// Sensitive marks a value that must not reach a log.
const Sensitive uint16 = 1 << 0

// Input is one job input, by name.
type Input struct {
	Key   string
	Value value.Value
}

// Sensitive reports whether the input's value is marked Sensitive.
func (i Input) Sensitive() bool { return i.Value.HasMarks(Sensitive) }

// Evaluator evaluates parsed templates against a scope.
type Evaluator struct {
	scope value.Value
}

func NewEvaluator(scope value.Value) (*Evaluator, error) {
	return &Evaluator{scope: scope}, nil
}

// Eval evaluates expr, parsed from text. Only literal text evaluates (to
// itself); the stand-in moa parser produces nothing else.
func (e *Evaluator) Eval(text string, expr ast.Expr) (value.Value, error) {
	if lit, ok := expr.(*ast.Text); ok {
		return value.String(lit.Value), nil
	}
	return value.Null(), fmt.Errorf("evaluating %q: %w", text, standin.Unavailable("expression evaluation"))
}
