package addmask

import (
	"bytes"
	"strings"
	"testing"
)

type store struct{ phrases []string }

func (s *store) Add(p string) error      { s.phrases = append(s.phrases, p); return nil }
func (s *store) List() ([]string, error) { return s.phrases, nil }

// Masking cannot be had here, so New must refuse rather than hand back
// writers that would pass registered secrets through.
func TestNewRefusesNamingTheStandIn(t *testing.T) {
	m, err := New(&store{phrases: []string{"secret"}}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "sandbox stand-in for gitlab.com/ajwalker/phrasestream") {
		t.Fatalf("New() = %v, %v; want the stand-in's refusal", m, err)
	}
	if m != nil {
		t.Errorf("New() returned a masker alongside its error")
	}
}
