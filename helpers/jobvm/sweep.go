package jobvm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// Found is one VM a sweep looked at closely: one with our name prefix.
type Found struct {
	Name   string
	State  string
	Job    int64
	Holder Holder
	// Verdict is what the sweep decided, in words an operator can act on.
	Verdict Verdict
	// Err is set when destroying an orphan failed, or says why a VM is
	// HolderUnknown.
	Err error
}

// Removable says a forced sweep destroys what was found: an orphaned VM or
// a partial clone.
func (f Found) Removable() bool { return f.Verdict == Orphan || f.Verdict == Partial }

// Verdict classifies a VM found by a sweep.
type Verdict string

const (
	// Orphan: ours, and no live process holds it. A forced sweep destroys it.
	Orphan Verdict = "orphan"
	// InUse: ours, held by a live job or by this process.
	InUse Verdict = "in use"
	// Foreign: our name prefix, but no marker of this runner. Never touched.
	Foreign Verdict = "not ours"
	// HolderUnknown: ours, but whether its holder runs cannot be told from
	// this process (Err says why). Never touched.
	HolderUnknown Verdict = "holder unknown"
	// Partial: datasets with our name prefix but no NAME.conf, left by a
	// `vm clone` that never finished. A forced sweep destroys them.
	Partial Verdict = "partial clone"
)

// partialCloneGrace is how old a directory without a conf must be before a
// sweep takes it for an abandoned clone rather than one in progress in
// another process (Create bounds a clone by cloneBudget).
const partialCloneGrace = 5 * cloneBudget

// Sweep finds VMs this runner created that no job holds any more — left by a
// runner that was killed, a host that rebooted mid-job, a cleanup that could
// not finish — and, unless dryRun, destroys them. VMs without this runner's
// marker are reported and never touched, even when their names look like ours.
//
// It also finds partial clones: directories with our name prefix that hold
// no NAME.conf, which `vm clone` leaves when cut short (it creates the
// datasets first) and which neither `vm list` nor `vm destroy` can see. With
// no marker to read, the prefix is the proof of ownership, as for the
// operator's sudoers rule; one held by this process, or younger than
// partialCloneGrace (another process may be cloning it), is in use.
//
// A VM that has a conf but no marker (a crash between `vm clone` and the
// marker's sysrc) stays Foreign: it cannot be told from an operator's VM
// that happens to have a job-like name.
func (m *Manager) Sweep(ctx context.Context, dryRun bool) ([]Found, error) {
	vms, err := m.VMs.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("sweep: list VMs: %w", err)
	}
	var found []Found
	for _, v := range vms {
		if !strings.HasPrefix(v.Name, m.Config.NamePrefix) || v.Name == m.Config.Template {
			continue
		}
		f := m.judge(v)
		if f.Removable() && !dryRun {
			dctx, cancel := context.WithTimeout(ctx, m.destroyBudget())
			f.Err = m.Destroy(dctx, v.Name)
			cancel()
		}
		found = append(found, f)
	}
	partial, err := m.VMs.PartialClones(m.Config.NamePrefix)
	if err != nil {
		return found, fmt.Errorf("sweep: %w", err)
	}
	for _, p := range partial {
		if p.Name == m.Config.Template {
			continue
		}
		f := Found{Name: p.Name, State: "no " + p.Name + ".conf", Verdict: Partial}
		if m.Held.Has(p.Name) || m.now().Sub(p.Modified) < partialCloneGrace {
			f.Verdict = InUse
		}
		if f.Removable() && !dryRun {
			dctx, cancel := context.WithTimeout(ctx, m.destroyBudget())
			f.Err = m.VMs.DestroyPartialClone(dctx, p.Name)
			cancel()
		}
		found = append(found, f)
	}
	return found, ctx.Err()
}

func (m *Manager) judge(v vmbhyve.VM) Found {
	f := Found{Name: v.Name, State: v.StateText, Verdict: Foreign}
	conf, err := m.VMs.ReadConf(v.Name)
	if err != nil {
		if !errors.Is(err, vmbhyve.ErrNotFound) {
			f.Err = err
		}
		return f
	}
	mk, ok := readMarker(conf)
	if !ok || mk.owner != m.Owner.ID() {
		return f
	}
	f.Job, f.Holder = mk.job, Holder(mk.holder)
	switch {
	case m.Held.Has(v.Name):
		f.Verdict = InUse
	case m.HolderIsSelf && f.Holder == m.Holder:
		// Recorded by this very process but no longer in its held set: the
		// job let go of it without destroying it.
		f.Verdict = Orphan
	default:
		switch alive, err := f.Holder.Alive(); {
		case err != nil:
			f.Verdict, f.Err = HolderUnknown, err
		case alive:
			f.Verdict = InUse
		default:
			f.Verdict = Orphan
		}
	}
	return f
}
