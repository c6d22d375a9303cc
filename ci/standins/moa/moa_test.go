package moa

import (
	"errors"
	"strings"
	"testing"

	"gitlab.com/gitlab-org/moa/ast"
)

func TestParseTemplateAcceptsLiteralsAndRefusesInterpolation(t *testing.T) {
	tests := []struct {
		text    string
		refused bool
	}{
		{"echo plain $HOME ${X} {{ y }}", false},
		{"", false},
		{"echo ${{ job.inputs.name }}", true},
		{"${{x}}", true},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			expr, err := ParseTemplate(tt.text)
			if tt.refused {
				if err == nil || !strings.Contains(err.Error(), "sandbox stand-in for gitlab.com/gitlab-org/moa") {
					t.Fatalf("ParseTemplate() error = %v, want the stand-in's refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if lit, ok := expr.(*ast.Text); !ok || lit.Value != tt.text {
				t.Errorf("ParseTemplate() = %#v, want the literal text", expr)
			}
		})
	}
}

type recorder struct {
	calls []string
	err   error
}

func (r *recorder) Enter(ast.Expr) (ast.Visitor, error) {
	r.calls = append(r.calls, "enter")
	return r, r.err
}

func (r *recorder) Exit(e ast.Expr) (ast.Expr, error) {
	r.calls = append(r.calls, "exit")
	return e, nil
}

func TestWalkEntersThenExitsAndStopsOnError(t *testing.T) {
	expr, err := ParseTemplate("literal")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	if got, err := expr.Walk(r); err != nil || got != expr || strings.Join(r.calls, ",") != "enter,exit" {
		t.Errorf("Walk() = %v, %v after %q; want the node back after enter,exit", got, err, r.calls)
	}
	stop := errors.New("stop")
	r = &recorder{err: stop}
	if _, err := expr.Walk(r); !errors.Is(err, stop) || strings.Join(r.calls, ",") != "enter" {
		t.Errorf("Walk() with a failing Enter: %v after %q; want stop after enter only", err, r.calls)
	}
}
