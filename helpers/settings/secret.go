package settings

import (
	"fmt"
	"log/slog"
)

// redacted is what every printing path shows instead of a secret. It is fixed
// so that log scrapers and tests can look for it.
const redacted = "[redacted]"

// Secret holds a credential read from the settings. Every way Go has of
// printing or serialising a value (fmt verbs including %#v, encoding/json and
// TOML via MarshalText, log/slog) shows "[redacted]", so a Settings value can
// be logged or wrapped into an error without leaking it. Call Reveal at the one
// place that needs the plain text.
type Secret string

// Reveal returns the secret in plain text. It exists so that every use of the
// plain text is easy to find.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret is non-empty; printing cannot tell.
func (s Secret) IsSet() bool { return s != "" }

func (s Secret) shown() string {
	if s == "" {
		return ""
	}
	return redacted
}

func (s Secret) String() string   { return s.shown() }
func (s Secret) GoString() string { return fmt.Sprintf("settings.Secret(%q)", s.shown()) }

// Format covers every verb, including %x and %q, which would otherwise bypass
// String and print the underlying bytes.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = fmt.Fprint(f, s.GoString())
	case verb == 'q':
		_, _ = fmt.Fprintf(f, "%q", s.shown())
	default:
		_, _ = fmt.Fprint(f, s.shown())
	}
}

// MarshalText keeps the secret out of JSON and TOML renderings of Settings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.shown()), nil }

// LogValue keeps the secret out of structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.shown()) }
