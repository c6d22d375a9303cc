// Package addmask is a sandbox stand-in for
// gitlab.com/ajwalker/phrasestream/addmask, whose source this build
// machine's module proxy refuses. The real package masks, in a job's output
// streams, the phrases a job registers for masking. New refuses, so
// `gitlab-runner-helper proxy-exec` stops before running anything rather
// than run a job whose registered secrets would reach its log unmasked.
package addmask

import (
	"errors"
	"io"
)

// PhraseStore is where masked phrases persist between processes; upstream
// passes its commands/helpers/internal/store.Store.
type PhraseStore interface {
	Add(phrase string) error
	List() ([]string, error)
}

// AddMask masks phrases in a set of output streams. The stand-in never
// hands one out.
type AddMask struct {
	outputs []io.Writer
}

var errNoMasking = errors.New("sandbox stand-in for gitlab.com/ajwalker/phrasestream: " +
	"output masking (proxy-exec) is not available in this build")

// New refuses: the stand-in cannot mask.
func New(PhraseStore, ...io.Writer) (*AddMask, error) {
	return nil, errNoMasking
}

// Get is the i-th output stream as New was given it.
func (m *AddMask) Get(i int) io.Writer { return m.outputs[i] }

func (m *AddMask) Close() error { return nil }
