package jobvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostnet"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// PhaseBind ties the VM's address and MAC to its tap on the host, between
// the lease lookup and the first SSH connection.
const PhaseBind Phase = "bind"

// keyBound records in the VM's conf what the bind step added on the host
// (hostnet.Binding.Record), before adding it: whoever destroys the VM, this
// process, another one or a sweep after a crash, removes exactly that.
const keyBound = "gitlab_runner_bhyve_bound"

// Network binds job VMs to their taps (helpers/hostnet.Host). A nil
// Network on the Manager means isolation = false.
type Network interface {
	Locate(ctx context.Context, vm string, addr netip.Addr, mac net.HardwareAddr) (hostnet.Binding, error)
	Bind(ctx context.Context, b hostnet.Binding) error
	Unbind(ctx context.Context, b hostnet.Binding) error
}

// bind is the bind step of CreateNamed. A failure fails the job closed:
// the caller destroys the VM, and no stage ever runs unbound. It is a
// system failure, except where only the operator can help (a switch that
// is not private, a privilege rule missing): a configuration error.
func (m *Manager) bind(ctx context.Context, v *VM, logf Logf) error {
	if m.Net == nil {
		logf("%s is NOT bound to its tap (isolation = false): another job on this switch can take its address or MAC and receive its scripts and secrets", v.Name)
		return nil
	}
	return m.phase(v, PhaseBind, func() error {
		b, err := m.Net.Locate(ctx, v.Name, v.Address.IP, v.MAC)
		if err != nil {
			return err
		}
		if err := m.VMs.SetConf(ctx, v.Name, keyBound+"="+b.Record()); err != nil {
			return fmt.Errorf("record the binding in %s's config: %w", v.Name, err)
		}
		if err := m.Net.Bind(ctx, b); err != nil {
			return err
		}
		logf("%s is bound to %s", v.Name, b)
		return nil
	})
}

// unbind removes the binding recorded in conf, if any. It runs after the
// guest is powered off (the tap and its static entry are gone with bhyve)
// and before the conf is destroyed with the VM.
func (m *Manager) unbind(ctx context.Context, name string) error {
	if m.Net == nil {
		return nil
	}
	conf, err := m.VMs.ReadConf(name)
	if errors.Is(err, vmbhyve.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s's binding record: %w", name, err)
	}
	rec, ok := conf[keyBound]
	if !ok || rec == "" {
		return nil
	}
	b, err := hostnet.ParseRecord(rec)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := m.Net.Unbind(ctx, b); err != nil {
		return fmt.Errorf("remove the binding of %s (%s): %w", name, b, err)
	}
	return nil
}
