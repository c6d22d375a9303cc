// Command bhyve-executor runs GitLab CI jobs in fresh bhyve VMs behind GitLab
// Runner's Custom executor protocol, for stock gitlab-runner installations,
// and gives operators tools to diagnose a host.
//
//	bhyve-executor [--config PATH] [--runner NAME] config|prepare|run|cleanup
//	bhyve-executor [--config PATH] [--runner NAME] doctor [--boot]
//	bhyve-executor [--config PATH] [--runner NAME] ip --mac MAC [--lease-file PATH]
//	bhyve-executor [--config PATH] [--runner NAME] sweep [--force]
//	bhyve-executor [--config PATH] [--runner NAME] template build|check|rotate|prune|rollback NAME ...
//	bhyve-executor version
//
// Each Custom executor stage is a separate process, started by gitlab-runner.
// How a failure leaves the process is decided in exactly one place, exit().
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// command is one subcommand.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, app *app, args []string) error
	// stage marks the Custom executor stages, whose failures are reported
	// through gitlab-runner's exit-code protocol.
	stage bool
}

var commands = []command{
	{name: "config", usage: "print the executor's configuration as JSON (Custom executor config stage)", run: configStage, stage: true},
	{name: "prepare", usage: "clone, boot and verify the job's VM (Custom executor prepare stage)", run: prepareStage, stage: true},
	{name: "run", usage: "run <script> <stage> in the job's VM (Custom executor run stage)", run: runStage, stage: true},
	{name: "cleanup", usage: "destroy the job's VM (Custom executor cleanup stage)", run: cleanupStage, stage: true},
	{name: "doctor", usage: "check the host end to end and say how to fix what is wrong", run: doctor},
	{name: "ip", usage: "look up a MAC's address the way the executor does", run: ipCommand},
	{name: "template", usage: "build, check, rotate, prune or roll back a job template", run: templateCommand},
	{name: "sweep", usage: "list (or with --force destroy) orphaned job VMs of this runner", run: sweepCommand},
	{name: "version", usage: "print the version", run: versionCommand},
}

func main() {
	app := &app{stdout: os.Stdout, stderr: os.Stderr, env: os.Getenv}
	args, err := app.parseGlobal(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bhyve-executor:", err)
		usage(os.Stderr)
		os.Exit(exitUsage)
	}
	if len(args) == 0 {
		usage(os.Stderr)
		os.Exit(exitUsage)
	}
	cmd, ok := find(args[0])
	if !ok {
		fmt.Fprintf(os.Stderr, "bhyve-executor: unknown command %q\n", args[0])
		usage(os.Stderr)
		os.Exit(exitUsage)
	}

	// gitlab-runner cancels a stage with SIGTERM (then SIGKILL after
	// graceful_kill_timeout); an operator presses ^C. Either way the stage's
	// context ends, the remote process is stopped and the stage returns.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	err = cmd.run(ctx, app, args[1:])
	os.Exit(app.exit(cmd, err))
}

const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 64 // sysexits' EX_USAGE
	defaultBFEC = 1  // gitlab-runner's BUILD_FAILURE_EXIT_CODE
	defaultSFEC = 2  // gitlab-runner's SYSTEM_FAILURE_EXIT_CODE
)

// exit is the one place that turns an outcome into an exit status.
//
// For the Custom executor stages the protocol decides: a script failure
// writes the script's exit code to BUILD_EXIT_CODE_FILE and exits with
// BUILD_FAILURE_EXIT_CODE; everything else exits SYSTEM_FAILURE_EXIT_CODE.
// The protocol has no "configuration error", so bad settings are system
// failures whose message starts with "configuration error:". Operator
// commands exit 1 on any failure.
//
// Nor can the protocol say "do not retry": upstream's custom executor turns
// SYSTEM_FAILURE_EXIT_CODE (and any unknown code) into a plain error, which
// retryCreateExecutor retries (3 attempts in all); only
// BUILD_FAILURE_EXIT_CODE becomes a *BuildError that stops it, labelled
// script_failure. A permanent system failure (failure.Permanent) therefore
// still exits SYSTEM_FAILURE_EXIT_CODE: blaming the job's script would hide
// a broken host from the operator, and since such failures are detected
// within seconds, the two extra attempts cost seconds, not boot_timeouts.
func (a *app) exit(cmd command, err error) int {
	if err == nil {
		return exitOK
	}
	var usageErr *usageError
	if errors.As(err, &usageErr) {
		fmt.Fprintf(a.stderr, "bhyve-executor %s: %v\n", cmd.name, err)
		return exitUsage
	}
	kind := failure.KindOf(err)
	if !cmd.stage {
		if !errors.Is(err, errReported) {
			fmt.Fprintf(a.stderr, "bhyve-executor %s: %s: %v\n", cmd.name, kind, err)
		}
		return exitFailed
	}
	if kind == failure.Script {
		code := failure.ExitCode(err)
		if path := a.env("BUILD_EXIT_CODE_FILE"); path != "" {
			if werr := os.WriteFile(path, []byte(strconv.Itoa(code)+"\n"), 0o644); werr != nil {
				fmt.Fprintf(a.stderr, "bhyve-executor: cannot record the exit code in BUILD_EXIT_CODE_FILE: %v\n", werr)
				return a.codeFromEnv("SYSTEM_FAILURE_EXIT_CODE", defaultSFEC)
			}
		}
		return a.codeFromEnv("BUILD_FAILURE_EXIT_CODE", defaultBFEC)
	}
	fmt.Fprintf(a.stderr, "ERROR: bhyve-executor %s: %s: %v\n", cmd.name, kind, err)
	return a.codeFromEnv("SYSTEM_FAILURE_EXIT_CODE", defaultSFEC)
}

func (a *app) codeFromEnv(name string, def int) int {
	if v, err := strconv.Atoi(a.env(name)); err == nil && v > 0 && v < 256 {
		return v
	}
	return def
}

// errReported marks a failure whose details the command already printed.
var errReported = errors.New("reported")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

func find(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: bhyve-executor [--config PATH] [--runner NAME] COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.usage)
	}
	fmt.Fprintf(w, "\n--config defaults to $%s, then %s\n", envConfig, strings.Join(defaultConfigPaths, ", then "))
	fmt.Fprintf(w, "--runner defaults to $%s, then the only [runners.NAME] section\n", envRunner)
}
