// Package standin words the refusal every feature of this stand-in module
// gives, so an operator can tell from any failing job that the binary is a
// sandbox build.
package standin

import "fmt"

// Unavailable reports that feature needs the real
// gitlab.com/gitlab-org/step-runner, which this build does not have.
func Unavailable(feature string) error {
	return fmt.Errorf("sandbox stand-in for gitlab.com/gitlab-org/step-runner: %s is not available in this build", feature)
}
