// Package value is a sandbox stand-in for gitlab.com/gitlab-org/moa/value,
// whose source this build machine's module proxy refuses. It declares the
// value model upstream's common/spec uses for job inputs: a Value that
// decodes from and encodes to JSON, its Kind, sensitivity marks, and the
// Mapper interface that upstream's spec.Inputs implements.
package value

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
)

// ErrAttributeNotFound is what a Mapper reports for a key it does not hold.
var ErrAttributeNotFound = errors.New("attribute not found")

// ErrInvalidKey is what a Mapper reports for a key of the wrong kind.
var ErrInvalidKey = errors.New("invalid key")

// Kind is the type of a Value. Upstream compares it with the kind announced
// by a job input and prints it with %q, hence String.
type Kind int

const (
	NullKind Kind = iota
	BoolKind
	NumberKind
	StringKind
	ArrayKind
	ObjectKind
)

var kindNames = [...]string{
	NullKind:   "null",
	BoolKind:   "bool",
	NumberKind: "number",
	StringKind: "string",
	ArrayKind:  "array",
	ObjectKind: "object",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Mapper is an object's contents. Its method set is the one upstream's
// spec.Inputs implements; it must not change without upstream changing.
type Mapper interface {
	All() iter.Seq2[Value, Value]
	Attr(name string) (Value, error)
	Get(key Value) (Value, error)
	Keys() iter.Seq[Value]
	Len() int
	Values() iter.Seq[Value]
	WithMarks(marks uint16) Mapper
}

// Value is an immutable moa value. The zero Value is null.
type Value struct {
	kind Kind
	b    bool
	// text holds a string's contents or a number's JSON literal, kept as
	// written so that a number survives a decode/encode round trip exactly.
	text  string
	items []Value
	obj   Mapper
	marks uint16
}

func Null() Value           { return Value{} }
func String(s string) Value { return Value{kind: StringKind, text: s} }
func Object(m Mapper) Value { return Value{kind: ObjectKind, obj: m} }

func (v Value) Kind() Kind { return v.kind }

// WithMarks returns v with marks added to the ones it carries.
func (v Value) WithMarks(marks uint16) Value {
	v.marks |= marks
	return v
}

// HasMarks reports whether v carries every mark in marks.
func (v Value) HasMarks(marks uint16) bool { return v.marks&marks == marks }

// String is a string's contents; any other kind is rendered as its JSON.
func (v Value) String() string {
	switch v.kind {
	case StringKind:
		return v.text
	case NullKind:
		return ""
	}
	out, err := v.MarshalJSON()
	if err != nil {
		return fmt.Sprintf("<%s: %v>", v.kind, err)
	}
	return string(out)
}

func (v Value) MarshalJSON() ([]byte, error) {
	switch v.kind {
	case NullKind:
		return []byte("null"), nil
	case BoolKind:
		return json.Marshal(v.b)
	case NumberKind:
		return []byte(v.text), nil
	case StringKind:
		return json.Marshal(v.text)
	case ArrayKind:
		if v.items == nil {
			return []byte("[]"), nil
		}
		return json.Marshal(v.items)
	case ObjectKind:
		var buf bytes.Buffer
		buf.WriteByte('{')
		first := true
		for k, item := range v.obj.All() {
			key, err := json.Marshal(k.String())
			if err != nil {
				return nil, err
			}
			val, err := item.MarshalJSON()
			if err != nil {
				return nil, err
			}
			if !first {
				buf.WriteByte(',')
			}
			first = false
			buf.Write(key)
			buf.WriteByte(':')
			buf.Write(val)
		}
		buf.WriteByte('}')
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("cannot encode value of kind %s", v.kind)
}

// UnmarshalJSON decodes any JSON document. Objects keep their keys in the
// order written, as a job input's struct content is read back in order.
func (v *Value) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	out, err := decode(dec)
	if err != nil {
		return err
	}
	*v = out
	return nil
}

func decode(dec *json.Decoder) (Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return Value{}, err
	}
	switch t := tok.(type) {
	case nil:
		return Null(), nil
	case bool:
		return Value{kind: BoolKind, b: t}, nil
	case json.Number:
		return Value{kind: NumberKind, text: t.String()}, nil
	case string:
		return String(t), nil
	case json.Delim:
		if t == '[' {
			var items []Value
			for dec.More() {
				item, err := decode(dec)
				if err != nil {
					return Value{}, err
				}
				items = append(items, item)
			}
			_, err := dec.Token()
			return Value{kind: ArrayKind, items: items}, err
		}
		obj := &object{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return Value{}, err
			}
			item, err := decode(dec)
			if err != nil {
				return Value{}, err
			}
			// The tokenizer only yields string keys inside an object.
			obj.keys = append(obj.keys, keyTok.(string))
			obj.values = append(obj.values, item)
		}
		_, err := dec.Token()
		return Object(obj), err
	}
	return Value{}, fmt.Errorf("unexpected JSON token %v", tok)
}

// object is the Mapper behind objects decoded from JSON.
type object struct {
	keys   []string
	values []Value
	marks  uint16
}

func (o *object) All() iter.Seq2[Value, Value] {
	return func(yield func(Value, Value) bool) {
		for i, k := range o.keys {
			if !yield(String(k), o.values[i].WithMarks(o.marks)) {
				return
			}
		}
	}
}

func (o *object) Attr(name string) (Value, error) {
	for i, k := range o.keys {
		if k == name {
			return o.values[i].WithMarks(o.marks), nil
		}
	}
	return Null(), ErrAttributeNotFound
}

func (o *object) Get(key Value) (Value, error) {
	if key.Kind() != StringKind {
		return Null(), fmt.Errorf("%w: object keys are strings, not %s", ErrInvalidKey, key.Kind())
	}
	return o.Attr(key.String())
}

func (o *object) Keys() iter.Seq[Value] {
	return func(yield func(Value) bool) {
		for _, k := range o.keys {
			if !yield(String(k)) {
				return
			}
		}
	}
}

func (o *object) Len() int { return len(o.keys) }

func (o *object) Values() iter.Seq[Value] {
	return func(yield func(Value) bool) {
		for _, v := range o.values {
			if !yield(v.WithMarks(o.marks)) {
				return
			}
		}
	}
}

func (o *object) WithMarks(marks uint16) Mapper {
	return &object{keys: o.keys, values: o.values, marks: o.marks | marks}
}
