package value

import (
	"encoding/json"
	"errors"
	"testing"
)

// Upstream's job inputs arrive as JSON and are checked by Kind; a struct
// input is read back as an object.
func TestValueDecodesJSONWithItsKindAndEncodesItBack(t *testing.T) {
	tests := []struct {
		in   string
		kind Kind
		str  string
	}{
		{`null`, NullKind, ""},
		{`true`, BoolKind, "true"},
		{`12345678901234567890`, NumberKind, "12345678901234567890"},
		{`1.50`, NumberKind, "1.50"},
		{`"a \"b\""`, StringKind, `a "b"`},
		{`["x",1,[]]`, ArrayKind, `["x",1,[]]`},
		{`{"z":1,"a":{"k":"v"}}`, ObjectKind, `{"z":1,"a":{"k":"v"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var v Value
			if err := json.Unmarshal([]byte(tt.in), &v); err != nil {
				t.Fatal(err)
			}
			if v.Kind() != tt.kind {
				t.Errorf("Kind() = %s, want %s", v.Kind(), tt.kind)
			}
			if v.String() != tt.str {
				t.Errorf("String() = %q, want %q", v.String(), tt.str)
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			_ = json.Unmarshal([]byte(tt.in), &want)
			_ = json.Unmarshal(out, &got)
			if string(mustJSON(t, got)) != string(mustJSON(t, want)) {
				t.Errorf("encoded %s, want %s", out, tt.in)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestValueRejectsMalformedJSON(t *testing.T) {
	var v Value
	if err := json.Unmarshal([]byte(`{"a":}`), &v); err == nil {
		t.Errorf("decoded malformed JSON into %v", v)
	}
}

func TestMarksAddUpAndReachObjectMembers(t *testing.T) {
	const a, b = 1 << 0, 1 << 1
	v := String("s").WithMarks(a)
	if !v.HasMarks(a) || v.HasMarks(a|b) {
		t.Errorf("marks after WithMarks(a): has a %v, has a|b %v", v.HasMarks(a), v.HasMarks(a|b))
	}
	if !v.WithMarks(b).HasMarks(a | b) {
		t.Error("WithMarks(b) dropped mark a")
	}
	var obj Value
	if err := json.Unmarshal([]byte(`{"k":"v"}`), &obj); err != nil {
		t.Fatal(err)
	}
	member, err := obj.obj.WithMarks(a).Attr("k")
	if err != nil || !member.HasMarks(a) {
		t.Errorf("member of a marked object: %v, marked %v", err, member.HasMarks(a))
	}
}

func TestObjectLookups(t *testing.T) {
	var v Value
	if err := json.Unmarshal([]byte(`{"k":"v","n":2}`), &v); err != nil {
		t.Fatal(err)
	}
	m := v.obj
	if got, err := m.Get(String("k")); err != nil || got.String() != "v" {
		t.Errorf(`Get("k") = %v, %v`, got, err)
	}
	if _, err := m.Attr("missing"); !errors.Is(err, ErrAttributeNotFound) {
		t.Errorf("Attr(missing) error = %v, want ErrAttributeNotFound", err)
	}
	if _, err := m.Get(Null()); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Get(null) error = %v, want ErrInvalidKey", err)
	}
	var keys []string
	for k := range m.Keys() {
		keys = append(keys, k.String())
	}
	if m.Len() != 2 || len(keys) != 2 || keys[0] != "k" || keys[1] != "n" {
		t.Errorf("Len() = %d, Keys() = %q, want 2 keys in written order", m.Len(), keys)
	}
}
