// Package fields is a sandbox stand-in for gitlab.com/gitlab-org/labkit/v2/fields,
// GitLab's shared schema of log field names. See ../README.md.
//
// The real module's names are not available here, so the two names upstream
// uses get plain descriptive values, and the deprecation tables are empty:
// upstream's log package then logs every field under the name it was given.
package fields

// Field names upstream logs under.
const (
	DurationS      = "duration_s"
	HTTPStatusCode = "http_status_code"
)

// Deprecation says which standard name replaces a legacy field name.
type Deprecation struct {
	Standard string
}

// Deprecated maps legacy field names to their replacement. Empty in this
// stand-in: no field is renamed.
var Deprecated = map[string]Deprecation{}

// VariantVersion maps a standard field name to the log schema version that
// introduced it. Empty in this stand-in.
var VariantVersion = map[string]int{}
