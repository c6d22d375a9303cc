// Package schema is a sandbox stand-in for
// gitlab.com/gitlab-org/step-runner/schema/v1, whose source this build
// machine's module proxy refuses: the step definitions of a job's `run:`
// keyword.
//
// Only the fields upstream (with its tests) reads or writes are typed. A job's `run:` also
// reaches the step-runner image re-encoded as JSON (upstream's shim for
// executors without native steps), so JSON decoding keeps every other key,
// and a `step:` that is not a plain reference, verbatim for that encoding.
package schema

import (
	"encoding/json"
	"fmt"
	"maps"
)

// StepInputs are a step's inputs by name.
type StepInputs map[string]any

// Step is one step, or (with Run) a sequence of steps.
type Step struct {
	Name   *string    `json:"name,omitempty" yaml:"name,omitempty"`
	Step   string     `json:"step,omitempty" yaml:"step,omitempty"`
	Inputs StepInputs `json:"inputs,omitempty" yaml:"inputs,omitempty"`
	Script *string    `json:"script,omitempty" yaml:"script,omitempty"`
	Run    []Step     `json:"run,omitempty" yaml:"run,omitempty"`

	// untyped holds every other key as it was decoded from JSON.
	untyped map[string]json.RawMessage
}

// plain is Step without its JSON methods (and, being unexported, the
// untyped keys are invisible to encoding/json).
type plain Step

func (s *Step) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("step: %w", err)
	}
	var t plain
	for key, dst := range map[string]any{"name": &t.Name, "step": &t.Step, "inputs": &t.Inputs, "script": &t.Script, "run": &t.Run} {
		v, ok := raw[key]
		// A step reference may be an object (e.g. a git reference); it
		// then travels untyped.
		if !ok || key == "step" && !isString(v) {
			continue
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("step %s: %w", key, err)
		}
		delete(raw, key)
	}
	*s = Step(t)
	if len(raw) > 0 {
		s.untyped = raw
	}
	return nil
}

func isString(v json.RawMessage) bool {
	var str string
	return json.Unmarshal(v, &str) == nil
}

func (s Step) MarshalJSON() ([]byte, error) {
	known, err := json.Marshal(plain(s))
	if err != nil || len(s.untyped) == 0 {
		return known, err
	}
	all := maps.Clone(s.untyped)
	if err := json.Unmarshal(known, &all); err != nil {
		return nil, err
	}
	return json.Marshal(all)
}
