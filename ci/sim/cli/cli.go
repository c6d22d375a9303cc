// Package cli is the multi-call bhyve-sim binary: the CLI to bring a
// simulated FreeBSD host up and down, the fake vm and sysrc commands the
// installed wrappers exec, and the internal roles (bhyve, bhyveload, guest
// init) selected through the environment.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/guest"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/host"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/netcmd"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/sysctl"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/sysrc"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/vmbhyve"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/fixture"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim"
)

const usage = `usage: bhyve-sim [--root DIR] COMMAND [ARGS]

Simulated FreeBSD host (vm-bhyve + ZFS + Kea + SSH) for testing the bhyve executor.
The root defaults to $BHYVE_SIM_ROOT, else ` + simstate.DefaultRoot + `.

commands:
  up [flags]            bring a host up and print "export NAME=value" lines for eval
  down [--all]          remove everything the host made (--all: every bhyve-sim host's
                        namespaces and processes on this machine)
  status                describe the host and its guests
  vm ARGS...            the fake vm(8) (what ROOT/bin/vm runs)
  sysrc ARGS...         the fake sysrc(8) (what ROOT/bin/sysrc runs)
  zfs ARGS...           the fake zfs(8) list/destroy -r (what ROOT/bin/zfs runs)
  sysctl ARGS...        the fake sysctl(8) of memory and CPU figures (ROOT/bin/sysctl)
  fault NAME [KEY=VALUE...|--clear]
                        show or set fault knobs of a VM or template
  lfc                   make Kea run its lease file cleanup now
  template NAME [--snapshot S] [--own-host-key] [--host-keys ed25519,ecdsa,rsa]
                        add another snapshotted template
  exec CMD [ARGS...]    run a command as the FreeBSD host: in its network namespace,
                        with its host name
  resources             list the host's live processes, namespaces, links, mounts

up flags:
  --vm-dir DIR --lease-file FILE --bin-dir DIR --subnet CIDR --hostname NAME
  --version 1.6|1.7|1.8 --template NAME --snapshot NAME --lfc-interval DUR
  --valid-lifetime DUR --user NAME

fault knobs: boot_delay loader_delay lock_delay ssh_delay shutdown_delay
  clone_delay
  (durations),
  no_dhcp no_sshd ignore_acpi lfc_on_lease (bools), fail (clone, clone-rename,
  start, _run, stop, poweroff, destroy), fail_message, fail_times,
  run_lock (stale, empty or a host name), steal_ip ADDR, steal_mac MAC
  (a running guest answers for another's address or MAC), record_sessions
  (bool, at boot)
`

// Main runs the binary and returns its exit status.
func Main(args []string) int {
	switch os.Getenv(simstate.RoleEnv) {
	case guest.RoleBhyve:
		return guest.MainBhyve()
	case guest.RoleBhyveload:
		return guest.MainBhyveload()
	case guest.RoleInit:
		return guest.MainInit()
	}

	root, argv0 := os.Getenv("BHYVE_SIM_ROOT"), ""
	rest := args[1:]
	for len(rest) > 0 && strings.HasPrefix(rest[0], "--") {
		flagName, val, has := strings.Cut(rest[0], "=")
		take := func() string {
			if has {
				rest = rest[1:]
				return val
			}
			if len(rest) < 2 {
				rest = rest[1:]
				return ""
			}
			v := rest[1]
			rest = rest[2:]
			return v
		}
		switch flagName {
		case "--root":
			root = take()
		case "--argv0":
			argv0 = take()
		case "--help":
			fmt.Print(usage)
			return 0
		default:
			fmt.Fprintf(os.Stderr, "bhyve-sim: unknown flag %s\n%s", flagName, usage)
			return 2
		}
	}
	if root == "" {
		root = simstate.DefaultRoot
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	if len(rest) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	cmd, cmdArgs := rest[0], rest[1:]

	switch cmd {
	case "vm", "sysrc", "zfs", "sysctl", "arp", "ifconfig":
		cfg, err := simstate.Load(root)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bhyve-sim: no simulated host at %s (run bhyve-sim up): %v\n", root, err)
			return 1
		}
		if cmd == "vm" {
			if argv0 == "" {
				argv0 = cfg.VMCommand()
			}
			return vmbhyve.Main(cfg, argv0, cmdArgs, vmbhyve.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
		}
		switch cmd {
		case "zfs":
			return zfs.Main(zfs.Open(cfg.ZFSDir()), cmdArgs, os.Stdout, os.Stderr)
		case "arp":
			return netcmd.MainArp(cfg, cmdArgs, os.Stdout, os.Stderr)
		case "ifconfig":
			return netcmd.MainIfconfig(cfg, cmdArgs, os.Stdout, os.Stderr)
		}
		if cmd == "sysctl" {
			return sysctl.Main(cfg.SysctlValues(), cmdArgs, os.Stdout, os.Stderr)
		}
		if argv0 == "" {
			argv0 = cfg.SysrcCommand()
		}
		return sysrc.Main(argv0, cmdArgs, os.Stdout, os.Stderr, []string{cfg.RCConf()})
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "up":
		err = cmdUp(ctx, root, cmdArgs, os.Stdout, os.Stderr)
	case "down":
		err = cmdDown(root, cmdArgs)
	case "status":
		err = cmdStatus(root, os.Stdout)
	case "fault":
		err = cmdFault(root, cmdArgs, os.Stdout)
	case "lfc":
		err = withHost(root, func(cfg *simstate.Config) error { return host.RunLFC(ctx, cfg) })
	case "template":
		err = cmdTemplate(root, cmdArgs)
	case "exec":
		return cmdExec(root, cmdArgs)
	case "resources":
		r := host.Inventory(simstate.IDForRoot(root), root)
		fmt.Print(r.String())
	case "help", "-h":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "bhyve-sim: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bhyve-sim:", err)
		return 1
	}
	return 0
}

func withHost(root string, fn func(*simstate.Config) error) error {
	cfg, err := simstate.Load(root)
	if err != nil {
		return fmt.Errorf("no simulated host at %s (run bhyve-sim up): %w", root, err)
	}
	return fn(cfg)
}

func cmdUp(ctx context.Context, root string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := host.Options{Root: root, Log: stderr}
	var subnet string
	fs.StringVar(&o.VMDir, "vm-dir", "", "vm_dir (default ROOT/vm)")
	fs.StringVar(&o.LeaseFile, "lease-file", "", "Kea lease file (default ROOT/kea/kea-leases4.csv)")
	fs.StringVar(&o.BinDir, "bin-dir", "", "where vm and sysrc are installed (default ROOT/bin)")
	fs.StringVar(&subnet, "subnet", host.DefaultSubnet.String(), "switch subnet")
	fs.StringVar(&o.HostName, "hostname", host.DefaultHostName, "host name written to run.lock")
	fs.StringVar(&o.VersionMode, "version", simstate.Version17, "vm-bhyve behaviour: 1.6, 1.7 or 1.8")
	fs.StringVar(&o.Template, "template", host.DefaultTemplate, "template name")
	fs.StringVar(&o.Snapshot, "snapshot", host.DefaultSnapshot, "template snapshot")
	fs.DurationVar(&o.LFCInterval, "lfc-interval", time.Hour, "Kea lfc-interval")
	fs.DurationVar(&o.ValidLifetime, "valid-lifetime", 10*time.Minute, "Kea valid-lifetime")
	fs.StringVar(&o.SSHUser, "user", host.DefaultSSHUser, "guest login user")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("--subnet: %w", err)
	}
	o.Subnet = p
	cfg, alive := host.Alive(root)
	if alive {
		fmt.Fprintf(stderr, "bhyve-sim: host at %s is already up\n", root)
	} else {
		if cfg, err = host.Up(ctx, o); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bhyve-sim: host %s is up (netns %s); guests get addresses in %s\n", cfg.HostName, cfg.NetNS, cfg.Subnet)
	}
	// A settings file for the executor, so bhyve-executor works against this
	// host straight away (BHYVE_EXECUTOR_CONFIG below).
	h, err := sim.Attach(cfg.Root)
	if err != nil {
		return err
	}
	settingsPath := filepath.Join(cfg.Root, "bhyve.toml")
	if err := fixture.WriteSettings(h, settingsPath); err != nil {
		return fmt.Errorf("write %s: %w", settingsPath, err)
	}

	path := cfg.BinDir
	for _, p := range filepath.SplitList(os.Getenv("PATH")) {
		if p != cfg.BinDir && p != "" {
			path += ":" + p
		}
	}
	for _, kv := range [][2]string{
		{"PATH", path},
		{"BHYVE_SIM_ROOT", cfg.Root},
		{"BHYVE_SIM_NETNS", cfg.NetNS},
		{"BHYVE_SIM_LEASES", cfg.LeaseFile},
		{"BHYVE_SIM_SSH_KEY", cfg.SSHKey()},
		{"BHYVE_SIM_KNOWN_HOSTS", cfg.KnownHosts()},
		{"BHYVE_SIM_USER", cfg.SSHUser},
		{"BHYVE_SIM_VM_DIR", cfg.VMDir},
		{"BHYVE_SIM_TEMPLATE", cfg.Template},
		{"BHYVE_SIM_SNAPSHOT", cfg.Snapshot},
		{"BHYVE_SIM_HOSTNAME", cfg.HostName},
		{"BHYVE_SIM_SUBNET", cfg.Subnet},
		{"BHYVE_SIM_VM", cfg.VMCommand()},
		{"BHYVE_SIM_SYSRC", cfg.SysrcCommand()},
		{"BHYVE_EXECUTOR_CONFIG", settingsPath},
		{"BHYVE_EXECUTOR_RUNNER", fixture.Runner},
	} {
		fmt.Fprintf(stdout, "export %s=%s\n", kv[0], shQuote(kv[1]))
	}
	return nil
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func cmdDown(root string, args []string) error {
	all := len(args) > 0 && args[0] == "--all"
	if len(args) > 0 && !all {
		return fmt.Errorf("down: unknown argument %q", args[0])
	}
	err := host.Down(root)
	if !all {
		return err
	}
	return errors.Join(err, host.DownAll())
}

func cmdStatus(root string, w io.Writer) error {
	cfg, alive := host.Alive(root)
	if cfg == nil {
		return fmt.Errorf("no simulated host at %s", root)
	}
	state := "DOWN"
	if alive {
		state = "up"
	}
	fmt.Fprintf(w, "host %s at %s: %s\n", cfg.HostName, cfg.Root, state)
	fmt.Fprintf(w, "  netns %s, bridge %s, subnet %s (host %s)\n", cfg.NetNS, cfg.Bridge, cfg.Subnet, cfg.HostAddr)
	fmt.Fprintf(w, "  vm_dir %s (zfs:%s), vm-bhyve %s mode\n", cfg.VMDir, cfg.Dataset, cfg.VersionMode)
	fmt.Fprintf(w, "  leases %s, kea socket %s\n", cfg.LeaseFile, cfg.KeaSocket)
	fmt.Fprintf(w, "  vm %s, sysrc %s\n", cfg.VMCommand(), cfg.SysrcCommand())
	fmt.Fprintf(w, "  templates %s, ssh user %s, key %s\n", strings.Join(cfg.Templates, " "), cfg.SSHUser, cfg.SSHKey())
	fmt.Fprintln(w)
	cmd := exec.Command(cfg.VMCommand(), "list")
	cmd.Stdout, cmd.Stderr = w, w
	return cmd.Run()
}

func cmdFault(root string, args []string, w io.Writer) error {
	return withHost(root, func(cfg *simstate.Config) error {
		if len(args) == 0 {
			return errors.New("fault: name required")
		}
		name := args[0]
		f, err := cfg.LoadFault(name)
		if err != nil {
			return err
		}
		for _, a := range args[1:] {
			if a == "--clear" {
				f = simstate.Fault{}
				continue
			}
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				return fmt.Errorf("fault: %q is not KEY=VALUE", a)
			}
			if err := setKnob(&f, k, v); err != nil {
				return err
			}
		}
		if len(args) > 1 {
			if err := host.SetFault(cfg, name, f); err != nil {
				return err
			}
		}
		b, _ := json.MarshalIndent(f, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return nil
	})
}

func setKnob(f *simstate.Fault, k, v string) error {
	dur := func(d *simstate.Duration) error {
		x, err := time.ParseDuration(v)
		*d = simstate.Duration(x)
		return err
	}
	boolean := func(b *bool) error {
		x, err := strconv.ParseBool(v)
		*b = x
		return err
	}
	var err error
	switch strings.ReplaceAll(k, "-", "_") {
	case "boot_delay":
		err = dur(&f.BootDelay)
	case "loader_delay":
		err = dur(&f.LoaderDelay)
	case "lock_delay":
		err = dur(&f.LockDelay)
	case "ssh_delay":
		err = dur(&f.SSHDelay)
	case "shutdown_delay":
		err = dur(&f.ShutdownDelay)
	case "clone_delay":
		err = dur(&f.CloneDelay)
	case "no_dhcp":
		err = boolean(&f.NoDHCP)
	case "no_sshd":
		err = boolean(&f.NoSSHD)
	case "ignore_acpi":
		err = boolean(&f.IgnoreACPI)
	case "lfc_on_lease":
		err = boolean(&f.LFCOnLease)
	case "fail":
		f.Fail = v
	case "fail_message":
		f.FailMessage = v
	case "fail_times":
		f.FailTimes, err = strconv.Atoi(v)
	case "run_lock":
		f.RunLock = v
	case "steal_ip":
		f.StealIP = v
	case "steal_mac":
		f.StealMAC = v
	case "record_sessions":
		err = boolean(&f.RecordSessions)
	default:
		return fmt.Errorf("fault: unknown knob %q", k)
	}
	if err != nil {
		return fmt.Errorf("fault: %s: %w", k, err)
	}
	return nil
}

func cmdTemplate(root string, args []string) error {
	return withHost(root, func(cfg *simstate.Config) error {
		fs := flag.NewFlagSet("template", flag.ContinueOnError)
		snap := fs.String("snapshot", host.DefaultSnapshot, "snapshot name")
		own := fs.Bool("own-host-key", false, "generate the template's own host keys")
		keys := fs.String("host-keys", "ed25519", "comma-separated host key types")
		if len(args) == 0 {
			return errors.New("template: name required")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return host.AddTemplate(cfg, args[0], *snap, host.TemplateOptions{
			OwnHostKey: *own, HostKeyTypes: strings.Split(*keys, ","),
		})
	})
}

// cmdExec replaces itself with a command that runs as part of the FreeBSD
// host: in the host's network namespace and in a UTS namespace whose host
// name is the one vm-bhyve writes into run.lock.
func cmdExec(root string, args []string) int {
	cfg, err := simstate.Load(root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bhyve-sim: no simulated host at %s: %v\n", root, err)
		return 1
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "bhyve-sim: exec: command required")
		return 2
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "bhyve-sim: exec: %v\n", err)
		return 127
	}
	// Namespaces belong to the thread; execve keeps the calling thread's.
	runtime.LockOSThread()
	ns, err := os.Open("/run/netns/" + cfg.NetNS)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bhyve-sim: exec: host namespace: %v\n", err)
		return 1
	}
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		fmt.Fprintf(os.Stderr, "bhyve-sim: exec: enter %s: %v\n", cfg.NetNS, err)
		return 1
	}
	ns.Close()
	if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
		fmt.Fprintf(os.Stderr, "bhyve-sim: exec: unshare uts: %v\n", err)
		return 1
	}
	if err := unix.Sethostname([]byte(cfg.HostName)); err != nil {
		fmt.Fprintf(os.Stderr, "bhyve-sim: exec: sethostname: %v\n", err)
		return 1
	}
	if err := syscall.Exec(path, args, os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "bhyve-sim: exec:", err)
		return 126
	}
	return 0
}
