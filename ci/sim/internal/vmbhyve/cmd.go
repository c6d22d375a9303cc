// Package vmbhyve is the fake vm(8) command of the simulated FreeBSD host.
// It reproduces what vm-bhyve shows to a caller: texts, streams, exit codes,
// the asynchronous _run supervisor, run.lock, MACs written on first start and
// the clone/destroy rules. Every behaviour names the vm-bhyve shell function
// it comes from (lib/vm-core, lib/vm-run, lib/vm-zfs, lib/vm-util, ...).
package vmbhyve

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// exitStatus ends the command with a status, like `exit N` in the script.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// vm is one invocation of the fake command.
type vm struct {
	cfg    *simstate.Config
	argv0  string
	stdin  *bufio.Reader
	stdinF *os.File
	stdout io.Writer
	stderr io.Writer
	zfs    *zfs.Store
	host   string
	now    func() time.Time
}

// IO bundles the standard streams of an invocation.
type IO struct {
	Stdin  *os.File
	Stdout io.Writer
	Stderr io.Writer
}

// Main runs `vm ARGS` for the host described by cfg and returns the exit
// status. argv0 is $0: the path the command was invoked as, which vm-bhyve
// prints in every ERROR/WARNING and re-executes for `_run`.
func Main(cfg *simstate.Config, argv0 string, args []string, stdio IO) int {
	v := &vm{
		cfg:    cfg,
		argv0:  argv0,
		stdinF: stdio.Stdin,
		stdout: stdio.Stdout,
		stderr: stdio.Stderr,
		zfs:    zfs.Open(cfg.ZFSDir()),
		host:   cfg.HostName,
		now:    time.Now,
	}
	if stdio.Stdin != nil {
		v.stdin = bufio.NewReader(stdio.Stdin)
	}
	recordInvocation(cfg, args)
	err := v.main(args)
	var st exitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &st):
		return int(st)
	default:
		// Simulator trouble, not vm-bhyve behaviour: say so plainly.
		fmt.Fprintf(v.stderr, "%s: bhyve-sim internal error: %v\n", v.argv0, err)
		return 70
	}
}

// recordInvocation appends the arguments to the host's invocation log, one
// line per run, so tests can count what a caller ran as root (each of which
// a real host's sudo would log). One short O_APPEND write keeps lines whole
// when invocations run in parallel.
func recordInvocation(cfg *simstate.Config, args []string) {
	f, err := os.OpenFile(cfg.InvocationLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(strings.Join(args, " ") + "\n")
}

// errf is util::err: "$0: ERROR: msg" on stderr, exit 1.
func (v *vm) errf(format string, args ...any) error {
	fmt.Fprintf(v.stderr, "%s: ERROR: %s\n", v.argv0, fmt.Sprintf(format, args...))
	return exitStatus(1)
}

// warnf is util::warn: "$0: WARNING: msg" on stderr, no exit.
func (v *vm) warnf(format string, args ...any) {
	fmt.Fprintf(v.stderr, "%s: WARNING: %s\n", v.argv0, fmt.Sprintf(format, args...))
}

// out prints a line on stdout.
func (v *vm) out(format string, args ...any) {
	fmt.Fprintf(v.stdout, format+"\n", args...)
}

// usage is util::usage: version and usage on stdout, exit 1.
func (v *vm) usage() error {
	fmt.Fprintln(v.stdout, v.versionLine())
	fmt.Fprint(v.stdout, v.usageText())
	return exitStatus(1)
}

// confirm is util::confirm. `read -p` shows the prompt (on stderr) only when
// stdin is a terminal; at EOF the while loop ends with status 0, so EOF
// counts as yes. Answers other than y*/n* ask again.
func (v *vm) confirm(msg string) bool {
	if v.stdin == nil {
		return true
	}
	tty := v.stdinF != nil && isTerminal(v.stdinF)
	for {
		if tty {
			fmt.Fprintf(v.stderr, "%s (y/n)? ", msg)
		}
		line, err := v.stdin.ReadString('\n')
		if err != nil && line == "" {
			return true
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "y"):
			return true
		case strings.HasPrefix(line, "n"):
			return false
		}
		if err != nil {
			// read returns non-zero on a last line without newline: the
			// loop ends, and the case that ran last leaves status 0.
			return true
		}
	}
}

// find is cmd::find: an exact match wins, otherwise a unique
// case-insensitive prefix; a second prefix match is an error.
func (v *vm) find(user string, valid []string) (string, bool, error) {
	if user == "" {
		return "", false, v.errf("no command specified")
	}
	found := ""
	for _, opt := range valid {
		if user == opt {
			return opt, true, nil
		}
		if strings.HasPrefix(strings.ToLower(opt), strings.ToLower(user)) {
			if found != "" {
				return "", false, v.errf("ambiguous command '%s'", user)
			}
			found = opt
		}
	}
	return found, found != "", nil
}

// getopts mimics the sh builtin for the option string (no arguments taking
// options here). Unknown letters print the sh diagnostic and yield '?'.
func (v *vm) getopts(args []string, letters string) (map[byte]bool, []string, bool) {
	opts := map[byte]bool{}
	bad := false
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			if strings.IndexByte(letters, a[j]) < 0 {
				fmt.Fprintf(v.stderr, "Illegal option -%c\n", a[j])
				bad = true
				continue
			}
			opts[a[j]] = true
		}
	}
	return opts, args[i:], bad
}

// parseArgs is cmd::parse_args (getopts fitv). -f means force and, for
// start/_run, foreground.
func (v *vm) parseArgs(args []string) (force, interactive bool, rest []string, err error) {
	opts, rest, _ := v.getopts(args, "fitv")
	force, interactive = opts['f'], opts['i']
	if force && interactive {
		return false, false, nil, v.errf("foreground and interactive mode are mutually exclusive")
	}
	return force, interactive, rest, nil
}

// main follows lib/vm-base: informational commands first, then the rc.conf
// and root checks, then cmd::parse.
func (v *vm) main(args []string) error {
	user := ""
	if len(args) > 0 {
		user = args[0]
	}
	// cmd::parse_info
	cmd, ok, err := v.find(user, v.cmdList())
	if err != nil {
		return err
	}
	if ok {
		switch cmd {
		case "version":
			v.out("%s", v.versionLine())
			return nil
		case "usage":
			return v.usage()
		}
	}
	// vm-base: vm_enable must be set in rc.conf.
	if !v.rcYes("vm_enable") {
		return v.errf("$vm_enable is not enabled in /etc/rc.conf!")
	}
	// util::check_bhyve_support
	if os.Geteuid() != 0 {
		return v.errf("virtual machines can only be managed by root")
	}
	if st, err := os.Stat(v.cfg.VMDir); err != nil || !st.IsDir() {
		return v.errf("$vm_dir has not been configured or is not a valid directory")
	}
	for _, d := range []string{".config", ".templates", ".iso", ".img"} {
		_ = os.MkdirAll(v.cfg.VMDir+"/"+d, 0o755)
	}
	// cmd::parse
	if !ok {
		return v.usage()
	}
	rest := args[1:]
	switch cmd {
	case "list":
		return v.list(rest)
	case "clone":
		return v.clone(rest)
	case "snapshot":
		return v.snapshot(rest)
	case "start":
		return v.start(rest)
	case "_run":
		return v.run(rest)
	case "stop":
		return v.stop(rest)
	case "poweroff":
		return v.poweroff(rest)
	case "destroy":
		return v.destroy(rest)
	case "info":
		return v.info(rest)
	case "create":
		return v.create(rest)
	case "img":
		return v.img(rest)
	case "rollback":
		return v.rollback(rest)
	case "switch":
		return v.vmSwitch(rest)
	default:
		return v.errf("'%s' is not supported by the bhyve simulator", cmd)
	}
}

// rcYes is rc.subr's checkyesno on the simulated /etc/rc.conf.
func (v *vm) rcYes(name string) bool {
	val := v.rcGet(name)
	switch strings.ToLower(val) {
	case "yes", "true", "on", "1":
		return true
	}
	return false
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
