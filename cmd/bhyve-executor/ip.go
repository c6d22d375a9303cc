package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
)

// ipCommand runs the executor's own lease lookup, so an operator sees exactly
// what a job would: the address on the first line (for scripts), then which
// file and row decided it.
func ipCommand(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("ip", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	mac := fs.String("mac", "", "the VM's MAC address (network0_mac in its .conf)")
	leaseFile := fs.String("lease-file", "", "Kea lease file to read (default: lease_file from the settings)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v (usage: ip --mac MAC [--lease-file PATH])", err)
	}
	if *mac == "" || fs.NArg() > 0 {
		return usagef("usage: ip --mac MAC [--lease-file PATH]")
	}
	hw, err := net.ParseMAC(*mac)
	if err != nil {
		return usagef("--mac %q is not a MAC address, e.g. 58:9c:fc:0a:1b:2c", *mac)
	}
	path := *leaseFile
	if path == "" {
		s, err := a.settings()
		if err != nil {
			return err
		}
		path = s.LeaseFile
	}

	now := time.Now()
	l, err := kea.NewReader(path).Lookup(ctx, hw, now)
	if err != nil {
		if errors.Is(err, kea.ErrNoLease) {
			fmt.Fprintln(a.stderr, err)
			return errReported
		}
		return err
	}
	fmt.Fprintln(a.stdout, l.Address)
	fmt.Fprintf(a.stdout, "matched %s line %d\n", l.File, l.Line)
	fmt.Fprintf(a.stdout, "hwaddr %s, state %s, expires %s (in %s), valid_lifetime %s, subnet %d",
		l.HWAddr, l.State, l.Expire.UTC().Format(time.RFC3339), l.Expire.Sub(now).Round(time.Second), l.ValidLifetime, l.SubnetID)
	if l.Hostname != "" {
		fmt.Fprintf(a.stdout, ", hostname %s", l.Hostname)
	}
	fmt.Fprintln(a.stdout)
	return nil
}
