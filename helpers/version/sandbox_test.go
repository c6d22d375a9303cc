package version

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

func TestStandInsFindsOnlyStandInDirectoryReplacements(t *testing.T) {
	dep := func(path, replace string) *debug.Module {
		m := &debug.Module{Path: path, Version: "v1.0.0"}
		if replace != "" {
			m.Replace = &debug.Module{Path: replace, Version: "(devel)"}
		}
		return m
	}
	tests := []struct {
		name string
		deps []*debug.Module
		want []string
	}{
		{"real build", []*debug.Module{dep("github.com/a/b", ""), dep("gitlab.com/gitlab-org/moa", "")}, nil},
		{"overlay, as go.work records it", []*debug.Module{
			dep("gitlab.com/gitlab-org/step-runner", "./standins/step-runner"),
			dep("github.com/a/b", ""),
			dep("gitlab.com/gitlab-org/moa", "./standins/moa"),
		}, []string{"gitlab.com/gitlab-org/moa", "gitlab.com/gitlab-org/step-runner"}},
		{"go.mod replace from the module root", []*debug.Module{dep("gitlab.com/gitlab-org/moa", "./ci/standins/moa")}, []string{"gitlab.com/gitlab-org/moa"}},
		{"absolute directory", []*debug.Module{dep("gitlab.com/gitlab-org/moa", "/work/ci/standins/moa")}, []string{"gitlab.com/gitlab-org/moa"}},
		{"other local directory", []*debug.Module{dep("github.com/a/b", "../b")}, nil},
		{"module replacement named like the directory", []*debug.Module{dep("github.com/a/b", "example.com/standins/b")}, nil},
		{"directory merely containing the word", []*debug.Module{dep("github.com/a/b", "./mystandins/b")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := standIns(tt.deps); !slices.Equal(got, tt.want) {
				t.Errorf("standIns() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSandboxNotice(t *testing.T) {
	if got := SandboxNotice(nil); got != "" {
		t.Errorf("SandboxNotice(nil) = %q, want none for a real build", got)
	}
	got := SandboxNotice([]string{"gitlab.com/gitlab-org/moa", "gitlab.com/gitlab-org/step-runner"})
	for _, want := range []string{"SANDBOX BUILD", "gitlab.com/gitlab-org/moa, gitlab.com/gitlab-org/step-runner", "must not be deployed"} {
		if !strings.Contains(got, want) {
			t.Errorf("SandboxNotice() = %q, missing %q", got, want)
		}
	}
}

// What a build through a go.work replace records is the toolchain's
// business, so this builds real binaries: one through a workspace that
// replaces a module with a directory under standins/, as ci/go.work does,
// and one whose replacement lives elsewhere.
func TestStandInsOfBinariesBuiltThroughAWorkspace(t *testing.T) {
	// The app gets this package from this module, by directory. It is a
	// dependency, not a workspace module, so its requirements are pruned:
	// the build needs no module this machine's proxy refuses.
	const module = "gitlab.com/bhyve-ci/gitlab-runner-bhyve"
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := strings.TrimPrefix(runtime.Version(), "go")
	tests := []struct {
		name, replaceDir, want string
	}{
		{"stand-in directory", "./standins/dep", "example.com/dep"},
		{"other directory", "./forks/dep", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "app", "go.mod"), "module example.com/app\n\ngo 1.26\n\nrequire (\n\texample.com/dep v1.0.0\n\t"+module+" v0.0.0\n)\n")
			write(t, filepath.Join(dir, "app", "main.go"), `package main

import (
	"fmt"
	"strings"

	"example.com/dep"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/version"
)

func main() {
	dep.Use()
	fmt.Print(strings.Join(version.StandIns(), ","))
}
`)
			write(t, filepath.Join(dir, tt.replaceDir, "go.mod"), "module example.com/dep\n\ngo 1.26\n")
			write(t, filepath.Join(dir, tt.replaceDir, "dep.go"), "package dep\n\nfunc Use() {}\n")
			work := filepath.Join(dir, "go.work")
			write(t, work, fmt.Sprintf("go %s\n\nuse ./app\n\nreplace (\n\t%s => %s\n\texample.com/dep => %s\n)\n", goVersion, module, root, tt.replaceDir))

			bin := filepath.Join(dir, "app.bin")
			build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
			build.Dir = filepath.Join(dir, "app")
			build.Env = append(os.Environ(), "GOWORK="+work, "GOFLAGS=", "GOTOOLCHAIN=local")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			out, err := exec.CommandContext(t.Context(), bin).Output()
			if err != nil {
				t.Fatalf("running the built binary: %v", err)
			}
			if string(out) != tt.want {
				t.Errorf("StandIns() in a binary replacing example.com/dep with %s = %q, want %q", tt.replaceDir, out, tt.want)
			}
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
