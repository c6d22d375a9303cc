package version

import (
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
)

// standInsDir is the directory of ci/go.work's stand-in modules. A build
// through that overlay records each replaced module in its build info with
// the replacement's path as go.work spells it ("./standins/moa"), version
// "(devel)" and no checksum.
const standInsDir = "standins"

// StandIns lists the modules this binary was linked with sandbox stand-ins
// for (see ci/README.md), sorted; empty for a real build. It reads the
// binary's own build info, so a build through the overlay is caught however
// it was built, with or without make.
func StandIns() []string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return standIns(info.Deps)
}

func standIns(deps []*debug.Module) []string {
	var out []string
	for _, dep := range deps {
		if dep.Replace != nil && isStandIn(dep.Replace.Path) {
			out = append(out, dep.Path)
		}
	}
	slices.Sort(out)
	return out
}

// isStandIn reports whether a replacement is a local directory inside a
// standins directory. Module paths never start with "." or "/", so only a
// directory replacement can match.
func isStandIn(path string) bool {
	if !strings.HasPrefix(path, ".") && !filepath.IsAbs(path) {
		return false
	}
	return slices.Contains(strings.Split(filepath.ToSlash(filepath.Clean(path)), "/"), standInsDir)
}

// SandboxNotice is the warning a binary linked with stand-ins gives at
// every start and in its version output; "" when modules is empty.
func SandboxNotice(modules []string) string {
	if len(modules) == 0 {
		return ""
	}
	return fmt.Sprintf("SANDBOX BUILD with stand-in modules for %s: a test vehicle, must not be deployed (see ci/README.md)",
		strings.Join(modules, ", "))
}
