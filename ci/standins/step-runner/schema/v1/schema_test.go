package schema

import (
	"encoding/json"
	"testing"
)

// A job's run: reaches the step-runner image re-encoded as JSON (upstream's
// shim), so keys the stand-in does not type must survive the round trip.
func TestStepJSONRoundTripKeepsEveryKey(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"typed keys", `{"name":"s","step":"builtin://x","inputs":{"a":[1,"b"]},"script":"echo hi"}`},
		{"untyped keys", `{"name":"e","exec":{"command":["cmd","arg"],"work_dir":"/w"},"func":"./f","env":{"K":"V"}}`},
		{"step reference as an object", `{"name":"g","step":{"git":{"url":"https://x","rev":"v1"}}}`},
		{"nested run", `{"run":[{"name":"inner","action":"a@v1"},{"script":"true"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Step
			if err := json.Unmarshal([]byte(tt.in), &s); err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if normalized(t, out) != normalized(t, []byte(tt.in)) {
				t.Errorf("round trip gave %s, want %s", out, tt.in)
			}
		})
	}
}

func normalized(t *testing.T, doc []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestStepDecodesTypedFields(t *testing.T) {
	var s Step
	if err := json.Unmarshal([]byte(`{"name":"n","step":"builtin://script_legacy","inputs":{"script":["a"]},"run":[{"name":"c"}]}`), &s); err != nil {
		t.Fatal(err)
	}
	if s.Name == nil || *s.Name != "n" || s.Step != "builtin://script_legacy" || len(s.Run) != 1 || *s.Run[0].Name != "c" {
		t.Errorf("decoded %+v", s)
	}
	if got, ok := s.Inputs["script"].([]any); !ok || len(got) != 1 || got[0] != "a" {
		t.Errorf("inputs = %#v", s.Inputs)
	}
}

func TestStepRejectsWrongTypes(t *testing.T) {
	for _, in := range []string{`[]`, `{"name":1}`, `{"run":"x"}`} {
		t.Run(in, func(t *testing.T) {
			var s Step
			if err := json.Unmarshal([]byte(in), &s); err == nil {
				t.Errorf("decoded %s into %+v", in, s)
			}
		})
	}
}
