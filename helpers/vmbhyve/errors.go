package vmbhyve

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
)

// Classes of failure, matched with errors.Is. Each is derived from vm-bhyve's
// own message, so it is only as reliable as that wording (checked against
// vm-bhyve 1.6 to 1.8-devel).
var (
	// ErrNotFound: the guest (or, for Clone, the template or its snapshot)
	// does not exist.
	ErrNotFound = errors.New("virtual machine not found")
	// ErrBusy: vm-bhyve refused because the guest looks running or locked.
	ErrBusy = errors.New("virtual machine is running or locked")
	// ErrExists: Clone's target name is taken.
	ErrExists = errors.New("virtual machine already exists")
	// ErrNotRunning: stop or poweroff found no running guest (no /dev/vmm/NAME).
	ErrNotRunning = errors.New("virtual machine is not running")
	// ErrMissingBinary: a configured program (vm, sysrc, sudo, doas) is not
	// installed at the configured path.
	ErrMissingBinary = errors.New("program not found")
	// ErrPrivilege: the privilege prefix refused to run the command without
	// a password, or vm-bhyve refused to run as a non-root user.
	ErrPrivilege = errors.New("not allowed to run as root")
	// ErrHostSetup: vm-bhyve itself is not set up on this host (vm_enable,
	// vm_dir, missing vmm support).
	ErrHostSetup = errors.New("vm-bhyve is not set up on this host")
)

// CommandError is a command that failed, or that vm-bhyve reported as failed
// while exiting 0 (`vm start` up to 1.6). It keeps both output streams so a
// caller can log them; Error() quotes vm-bhyve's message and the command.
type CommandError struct {
	Argv     []string
	ExitCode int // -1 when the process did not exit normally (not started, killed)
	Stdout   string
	Stderr   string
	// Hint says what the operator should change, for setup problems.
	Hint string
	// Err is the Commander's error (an *exec.ExitError, a start failure, a
	// context error), nil when vm-bhyve exited 0 but reported a failure.
	Err error

	kind error // one of the Err* classes above, or nil
}

// maxMessage bounds how much of a command's output lands in an error string:
// enough for vm-bhyve's one-line messages, not a whole usage text.
const maxMessage = 400

func (e *CommandError) Error() string {
	var b strings.Builder
	if msg := e.Message(); msg != "" {
		b.WriteString(msg)
		b.WriteString(" (")
	} else {
		b.WriteString("command failed (")
	}
	b.WriteString(formatArgv(e.Argv))
	switch {
	case e.ExitCode >= 0 && e.Err == nil:
		fmt.Fprintf(&b, ": exit status %d, failure reported on stdout", e.ExitCode)
	case e.ExitCode >= 0:
		fmt.Fprintf(&b, ": exit status %d", e.ExitCode)
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	b.WriteString(")")
	if e.Hint != "" {
		b.WriteString("; to fix: ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap exposes both the Commander's error (so errors.Is finds
// context.Canceled) and the class (so errors.Is finds ErrNotFound).
func (e *CommandError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	return errs
}

// Message is what vm-bhyve (or the privilege tool) said, without prefixes:
// util::err's "$0: ERROR: " lines on stderr first, then core::__start's
// "  ! " lines on stdout, then util::warn's "$0: WARNING: " lines, then the
// last lines of stderr, then of stdout. Several lines are joined with "; ".
func (e *CommandError) Message() string {
	if m := taggedLines(e.Stderr, ": ERROR: "); m != "" {
		return m
	}
	if m := startFailures(e.Stdout); m != "" {
		return m
	}
	if m := taggedLines(e.Stderr, ": WARNING: "); m != "" {
		return m
	}
	if m := tailLines(e.Stderr); m != "" {
		return m
	}
	return tailLines(e.Stdout)
}

// taggedLines collects the text after tag on each line that has it. $0 is the
// path vm was run as, so the tag is matched anywhere rather than as a prefix.
func taggedLines(s, tag string) string {
	var msgs []string
	for _, line := range strings.Split(s, "\n") {
		if _, after, ok := strings.Cut(line, tag); ok {
			msgs = append(msgs, strings.TrimSpace(after))
		}
	}
	return clip(strings.Join(msgs, "; "))
}

// startFailures collects core::__start's "  ! msg" lines, which it prints on
// stdout before returning 1 for that guest.
func startFailures(stdout string) string {
	var msgs []string
	for _, line := range strings.Split(stdout, "\n") {
		if msg, ok := strings.CutPrefix(line, "  ! "); ok {
			msgs = append(msgs, strings.TrimSpace(msg))
		}
	}
	return clip(strings.Join(msgs, "; "))
}

// tailLines keeps the last few non-empty lines: where a program usually says
// why it failed.
func tailLines(s string) string {
	var lines []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return clip(strings.Join(lines, "; "))
}

func clip(s string) string {
	if r := []rune(s); len(r) > maxMessage {
		return string(r[:maxMessage]) + "…"
	}
	return s
}

// formatArgv renders argv for a human; arguments with spaces or quotes are
// quoted so the boundaries stay visible. There is nothing secret in argv.
func formatArgv(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") {
			a = fmt.Sprintf("%q", a)
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

// classify maps vm-bhyve's wording onto a class. The phrases come from
// lib/vm-core (core::__start, core::stop, core::poweroff, core::destroy),
// lib/vm-run (vm::confirm_stopped) and lib/vm-zfs (zfs::clone).
func classify(msg string) error {
	switch {
	case strings.Contains(msg, "doesn't appear to be a valid virtual machine"), // core::destroy
		strings.Contains(msg, "does not seem to be a valid virtual machine"),       // core::__start
		strings.Contains(msg, "does not appear to be an existing virtual machine"), // zfs::clone source
		strings.Contains(msg, "doesn't seem to exist"):                             // zfs::clone @snapshot
		return ErrNotFound
	case strings.Contains(msg, "new guest already exists"): // zfs::clone target
		return ErrExists
	case strings.Contains(msg, "doesn't appear to be a running virtual machine"): // core::stop, core::poweroff
		return ErrNotRunning
	case strings.Contains(msg, "appears to be running"), // vm::confirm_stopped, core::__start
		strings.Contains(msg, "(locked)"):
		return ErrBusy
	}
	return nil
}

// diagnoseSetup recognises failures the operator must fix on the host rather
// than retry: a program missing at its configured path, a privilege prefix
// that wants a password or has no rule, and vm-bhyve's own preconditions
// (lib/vm-base, util::check_bhyve_support). It returns the class and a hint,
// or nil.
//
// privilege is the configured prefix and target the program it runs (vm or
// sysrc), so messages can name the exact rule to add.
func diagnoseSetup(privilege []string, target string, e *CommandError) (error, string) {
	if e.Err != nil && e.ExitCode < 0 && isNotExist(e.Err) {
		if len(privilege) > 0 && len(e.Argv) > 0 && e.Argv[0] == privilege[0] {
			return ErrMissingBinary, fmt.Sprintf("%s is not installed: install it, or change the privilege setting (currently %q)",
				privilege[0], strings.Join(privilege, " "))
		}
		return ErrMissingBinary, fmt.Sprintf("%s does not exist: install it (vm is in the sysutils/vm-bhyve package) or set the right path in the runner's settings", target)
	}
	tool := ""
	if len(privilege) > 0 {
		tool = baseName(privilege[0])
	}
	for _, line := range strings.Split(e.Stderr, "\n") {
		line = strings.TrimSpace(line)
		if tool != "" {
			if rest, ok := strings.CutPrefix(line, tool+": "); ok &&
				strings.HasPrefix(rest, target+": ") &&
				(strings.HasSuffix(rest, "command not found") || strings.HasSuffix(rest, "No such file or directory")) {
				// sudo: "sudo: /usr/local/sbin/vm: command not found";
				// doas: "doas: /usr/local/sbin/vm: No such file or directory".
				return ErrMissingBinary, fmt.Sprintf("%s does not exist: install it (vm is in the sysutils/vm-bhyve package) or set the right path in the runner's settings", target)
			}
			if privilegeRefusal(tool, line) {
				return ErrPrivilege, privilegeHint(tool, target)
			}
		}
		switch {
		case strings.HasSuffix(line, "virtual machines can only be managed by root"):
			return ErrPrivilege, "vm-bhyve must run as root: run the runner as root or set a privilege prefix such as \"sudo -n\" or \"doas -n\""
		case strings.Contains(line, "is not enabled in /etc/rc.conf"):
			return ErrHostSetup, "enable vm-bhyve: sysrc vm_enable=YES"
		case strings.Contains(line, "has not been configured or is not a valid directory"):
			return ErrHostSetup, "set vm_dir in /etc/rc.conf (e.g. sysrc vm_dir=zfs:zroot/vm) and run vm init"
		case strings.Contains(line, "kernel vmm not initialised"):
			return ErrHostSetup, "load vmm.ko on a CPU with VT-x/AMD-V (kldload vmm)"
		}
	}
	return nil, ""
}

// privilegeRefusal matches sudo's and doas's refusals to run a command
// non-interactively. Some of sudo's have no "sudo:" prefix ("Sorry, user bob
// is not allowed to execute ..."), so sudo's phrases are matched anywhere;
// doas's "Operation not permitted" is too generic for that and must carry
// the "doas: " prefix.
func privilegeRefusal(tool, line string) bool {
	rest, prefixed := strings.CutPrefix(line, tool+": ")
	for _, s := range []string{
		"a password is required",     // sudo -n, doas -n
		"a terminal is required",     // sudo without -n and no tty
		"is not in the sudoers file", // sudo
		"is not allowed to execute",  // sudo, no rule for this command
		"may not run sudo",           // sudo, no rule at all
	} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return prefixed && (rest == "Authentication failed" || rest == "Operation not permitted") // doas
}

func privilegeHint(tool, target string) string {
	user := runnerUser()
	switch tool {
	case "doas":
		return fmt.Sprintf("the runner user must be allowed to run %s as root without a password: add \"permit nopass %s as root cmd %s\" to /usr/local/etc/doas.conf", target, user, target)
	default:
		return fmt.Sprintf("the runner user must be allowed to run %s as root without a password: add a NOPASSWD sudoers rule such as \"%s ALL=(root) NOPASSWD: %s\" (visudo -f /usr/local/etc/sudoers.d/gitlab-runner-bhyve)", target, user, target)
	}
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound)
}

func baseName(path string) string { return filepath.Base(path) }

// runnerUser names the account in hints; the rule has to be written for the
// user the runner runs as, which is rarely obvious to whoever reads the log.
func runnerUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "<runner user>"
}
