// Package ast is a sandbox stand-in for gitlab.com/gitlab-org/moa/ast, whose
// source this build machine's module proxy refuses. It declares the syntax
// tree upstream's common/spec walks after parsing a job-input template.
package ast

// Expr is a node of a parsed template.
type Expr interface {
	// Walk visits the node and its children with v; see Visitor.
	Walk(v Visitor) (Expr, error)
}

// Visitor is the interface upstream's common/spec implements to look for
// interpolations. Enter is called before a node's children and returns the
// visitor for them (nil skips them); Exit is called after and returns the
// node to keep in the tree. An error from either stops the walk.
type Visitor interface {
	Enter(expr Expr) (Visitor, error)
	Exit(expr Expr) (Expr, error)
}

// Text is literal template text, with no interpolation in it. The stand-in
// parser (moa.ParseTemplate) produces nothing else.
type Text struct {
	Value string
}

func (t *Text) Walk(v Visitor) (Expr, error) { return walkLeaf(t, v) }

// Template is one ${{ ... }} interpolation. The stand-in parser refuses text
// that contains one, so no tree built here holds it; upstream still asks
// for it while walking.
type Template struct{}

func (t *Template) Walk(v Visitor) (Expr, error) { return walkLeaf(t, v) }

// walkLeaf walks a node without children: there is nothing to hand the
// visitor Enter returns.
func walkLeaf(e Expr, v Visitor) (Expr, error) {
	if _, err := v.Enter(e); err != nil {
		return e, err
	}
	return v.Exit(e)
}
