package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

const defaultRunnerBinary = "/usr/local/bin/gitlab-runner"

// templateBuild is `template build NAME --image FILE`: vm create from the
// image with the runner's key in vm-bhyve's cloud-init seed, boot, connect
// as the image's default user (trusting its first host key), provision,
// stop, snapshot, pin the host key.
func templateBuild(ctx context.Context, a *app, args []string) error {
	name, rest := splitName(args)
	fs := flag.NewFlagSet("template build", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	image := fs.String("image", "", "cloud image to write onto disk0 (vm create -i)")
	size := fs.String("size", "20G", "disk0 size (vm create -s)")
	cpus := fs.String("cpus", "2", "virtual CPUs (vm create -c)")
	memory := fs.String("memory", "2G", "memory (vm create -m)")
	profile := fs.String("profile", "default", "vm-bhyve template profile in $vm_dir/.templates (vm create -t)")
	sw := fs.String("switch", "", "vm-bhyve switch of the CI bridge (default: the profile's network0_switch)")
	adminUser := fs.String("admin-user", "freebsd", "the image's default user, who gets the key from cloud-init")
	var po provisionOptions
	fs.StringVar(&po.script, "provision", "", "operator script run as root after the default provisioning")
	fs.StringVar(&po.packages, "packages", "", "extra packages, space separated")
	fs.StringVar(&po.runnerBinary, "runner-binary", defaultRunnerBinary, "the host's gitlab-runner, copied into the guest")
	fs.StringVar(&po.runnerURL, "runner-url", "", "fetch gitlab-runner from this URL in the guest instead of copying the host's")
	dry := fs.Bool("dry-run", false, "print every host command and run none")
	if err := fs.Parse(rest); err != nil || fs.NArg() > 0 || name == "" || *image == "" {
		return usagef("usage: template build %s", templateSubcommands[0].usage)
	}
	e, err := a.templateEnv(name)
	if err != nil {
		return err
	}
	*image = absPath(*image)
	po.script, po.runnerBinary = absPath(po.script), absPath(po.runnerBinary)
	snap := vmbhyve.BuildSnapshotName(time.Now())
	if *dry {
		return e.printBuildPlan(vmbhyve.CreateOptions{Profile: *profile, Size: *size, Memory: *memory, CPUs: *cpus, Image: *image, PublicKeyFile: "PUBKEY-FILE"}, *sw, *adminUser, snap, po)
	}

	if _, exists, err := e.d.Get(ctx, name); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("a VM named %s already exists; to refresh it use `template rotate %s`, or pick another name", name, name)
	}
	if po.runnerURL == "" {
		if po.runnerVersion, err = hostRunnerVersion(ctx, po.runnerBinary); err != nil {
			return err
		}
	}
	pub, err := e.writePublicKey()
	if err != nil {
		return err
	}
	defer os.Remove(pub)

	e.logf("creating %s from %s", name, *image)
	if err := e.d.Create(ctx, name, vmbhyve.CreateOptions{Profile: *profile, Size: *size, Memory: *memory, CPUs: *cpus, Image: *image, PublicKeyFile: pub}); err != nil {
		return err
	}
	if *sw != "" {
		if err := e.d.SetConf(ctx, name, "network0_switch="+*sw); err != nil {
			return err
		}
	}
	e.logf("booting %s", name)
	g, err := e.boot(ctx, name, *adminUser, nil)
	if err != nil {
		return fmt.Errorf("first boot of %s: %w; the VM is left for inspection (vm console %s; vm destroy -f %s)", name, err, name, name)
	}
	defer g.client.Close()
	e.logf("%s is up at %s (%s), host key %s (trusted on first use)", name, g.addr, g.ready.Round(time.Millisecond), ssh.FingerprintSHA256(g.hostKey))
	if err := e.provision(ctx, g, po, false); err != nil {
		return err
	}
	return e.finish(ctx, g, snap)
}

// finish stops the template, snapshots it and pins its host key: the end
// of both build and rotate.
func (e *templateEnv) finish(ctx context.Context, g *guest, snap string) error {
	_ = g.client.Close()
	e.logf("stopping %s", e.name)
	if err := e.stop(ctx, e.name); err != nil {
		return err
	}
	if err := e.d.Snapshot(ctx, e.name, snap); err != nil {
		return err
	}
	e.logf("snapshot %s@%s taken", e.name, snap)
	khf := e.s.SSH.KnownHostsFile
	if khf != "" {
		if err := pinHostKey(khf, e.name, g.hostKey); err != nil {
			return fmt.Errorf("pin the host key in %s: %w", khf, err)
		}
		e.logf("host key of %s pinned in %s", e.name, khf)
	}
	fmt.Fprintf(e.a.stdout, "\nAdd to %s (section [defaults] or [runners.%q]):\n", e.s.Path, e.s.RunnerName)
	fmt.Fprintf(e.a.stdout, "  template = %q\n  snapshot = %q   # or %q to pin this build\n", e.name, vmbhyve.SnapshotLatest, snap)
	if khf == "" {
		fmt.Fprintf(e.a.stdout, "and pin the host key, e.g. in ssh.known_hosts_file:\n  %s %s\n", e.name, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(g.hostKey))))
	}
	return nil
}

// writePublicKey writes the runner's public key where vm create -k (run
// through the privilege prefix) can read it.
func (e *templateEnv) writePublicKey() (string, error) {
	signers, err := e.s.Signers()
	if err != nil {
		return "", err
	}
	if len(signers) == 0 {
		return "", fmt.Errorf("%s: ssh.identity_file is not set; the template is built for key logins with the runner's key", e.s.Path)
	}
	f, err := os.CreateTemp("", "bhyve-executor-key-*.pub")
	if err != nil {
		return "", err
	}
	_, werr := f.Write(ssh.MarshalAuthorizedKey(signers[0].PublicKey()))
	if cerr := f.Close(); werr != nil || cerr != nil {
		return "", fmt.Errorf("write public key: %v %v", werr, cerr)
	}
	return f.Name(), os.Chmod(f.Name(), 0o644)
}

// printBuildPlan is --dry-run: the host commands in order, argv-quoted,
// with the guest steps between them as comments.
func (e *templateEnv) printBuildPlan(o vmbhyve.CreateOptions, sw, adminUser, snap string, po provisionOptions) error {
	w := e.a.stdout
	cmd := func(argv []string) { fmt.Fprintln(w, shArgv(argv)) }
	fmt.Fprintf(w, "# template build %s (dry run: nothing is executed)\n", e.name)
	fmt.Fprintf(w, "# PUBKEY-FILE: a temporary file with the public key of %s\n", e.s.SSH.IdentityFile)
	if po.runnerURL == "" {
		cmd([]string{po.runnerBinary, "--version"})
	}
	cmd(e.s.VMArgv(vmbhyve.CreateArgs(e.name, o)...))
	if sw != "" {
		cmd(e.s.SysrcArgv("-f", e.s.VMDir+"/"+e.name+"/"+e.name+".conf", "network0_switch="+sw))
	}
	cmd(e.s.VMArgv("start", e.name))
	cmd(e.s.VMArgv("list"))
	fmt.Fprintf(w, "# until %s is Running; its network0_mac from %s/%s/%s.conf, its address from %s\n", e.name, e.s.VMDir, e.name, e.name, e.s.LeaseFile)
	fmt.Fprintf(w, "# ssh %s@ADDRESS (host key trusted on first use): uname -s; uname -m\n", adminUser)
	if po.runnerURL == "" {
		fmt.Fprintf(w, "# ssh %s@ADDRESS: cat > /tmp/gitlab-runner.upload < %s\n", adminUser, po.runnerBinary)
	}
	fmt.Fprintf(w, "# ssh %s@ADDRESS: %s < provision/default.sh\n", adminUser, becomeRoot)
	if po.script != "" {
		fmt.Fprintf(w, "# ssh %s@ADDRESS: %s < %s\n", adminUser, becomeRoot, po.script)
	}
	cmd(e.s.VMArgv("stop", e.name))
	cmd(e.s.VMArgv("list"))
	fmt.Fprintf(w, "# until %s is Stopped, up to stop_timeout %s; after that vm poweroff -f %s and no snapshot (the disk is not clean)\n", e.name, e.s.StopTimeout, e.name)
	cmd(e.s.VMArgv("snapshot", e.name+"@"+snap))
	if e.s.SSH.KnownHostsFile != "" {
		fmt.Fprintf(w, "# pin the host key: \"%s <key>\" in %s\n", e.name, e.s.SSH.KnownHostsFile)
	}
	return nil
}
