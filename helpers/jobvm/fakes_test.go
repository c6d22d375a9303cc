package jobvm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// fakeHypervisor stands in for vm-bhyve in the lifecycle's unit tests. It
// records every call so tests can assert order, and fails on request.
type fakeHypervisor struct {
	mu    sync.Mutex
	calls []string
	vms   map[string]*fakeVM

	// boot is the sequence of states a Boot goes through; see Boot.
	boot []vmbhyve.State

	failClone, failSetConf, failStart, failBoot, failStop, failDestroy error

	// partial holds partial clones (datasets without a conf) by name, with
	// their modification time.
	partial map[string]time.Time
	// cloneGate, when set, holds Clone half-way (datasets made, conf not yet
	// renamed) until it is closed. If Clone's context ends first, Clone
	// stops there, as a signalled `vm clone` would: a partial clone.
	cloneGate chan struct{}
	cloning   chan struct{} // closed when Clone reached the gate
	// cloneLeavesPartial: a failClone leaves the datasets behind, as
	// zfs::clone does when the conf rename fails.
	cloneLeavesPartial bool
}

type fakeVM struct {
	conf  map[string]string
	state vmbhyve.State
}

func newFakeHypervisor(templates ...string) *fakeHypervisor {
	h := &fakeHypervisor{vms: map[string]*fakeVM{}, partial: map[string]time.Time{}, boot: []vmbhyve.State{vmbhyve.StateLocked, vmbhyve.StateRunning}}
	for _, t := range templates {
		// cpu and memory are required in every vm-bhyve guest's conf
		// (core::__start refuses to start one without them).
		h.vms[t] = &fakeVM{conf: map[string]string{"loader": "bhyveload", "cpu": "2", "memory": "1G"}, state: vmbhyve.StateStopped}
	}
	return h
}

func (h *fakeHypervisor) record(format string, args ...any) {
	h.calls = append(h.calls, fmt.Sprintf(format, args...))
}

func (h *fakeHypervisor) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func (h *fakeHypervisor) Has(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.vms[name]
	return ok
}

func (h *fakeHypervisor) List(ctx context.Context) ([]vmbhyve.VM, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("list")
	var out []vmbhyve.VM
	for name, v := range h.vms {
		out = append(out, vmbhyve.VM{Name: name, State: v.state, StateText: string(v.state)})
	}
	return out, nil
}

// ResolveSnapshot: the fake's snapshots are named as configured.
func (h *fakeHypervisor) ResolveSnapshot(_, snapshot string) (string, error) { return snapshot, nil }

func (h *fakeHypervisor) Clone(ctx context.Context, template, snapshot, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("clone %s@%s %s", template, snapshot, name)
	if _, ok := h.partial[name]; ok {
		return fmt.Errorf("cannot create '%s': dataset already exists", name)
	}
	if h.cloneGate != nil {
		h.partial[name] = time.Now()
		close(h.cloning)
		h.mu.Unlock()
		select {
		case <-h.cloneGate:
		case <-ctx.Done():
		}
		h.mu.Lock()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("vm clone: %w", err)
		}
		delete(h.partial, name)
	}
	if h.failClone != nil {
		if h.cloneLeavesPartial {
			h.partial[name] = time.Now()
		}
		return h.failClone
	}
	t, ok := h.vms[template]
	if !ok {
		return fmt.Errorf("template %s: %w", template, vmbhyve.ErrNotFound)
	}
	conf := map[string]string{}
	for k, v := range t.conf {
		conf[k] = v
	}
	h.vms[name] = &fakeVM{conf: conf, state: vmbhyve.StateStopped}
	return nil
}

func (h *fakeHypervisor) PartialClones(prefix string) ([]vmbhyve.PartialClone, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []vmbhyve.PartialClone
	for name, mod := range h.partial {
		if strings.HasPrefix(name, prefix) {
			out = append(out, vmbhyve.PartialClone{Name: name, Modified: mod})
		}
	}
	return out, nil
}

func (h *fakeHypervisor) DestroyPartialClone(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("destroy-partial %s", name)
	if _, ok := h.partial[name]; !ok {
		return fmt.Errorf("%s: not a partial clone", name)
	}
	delete(h.partial, name)
	return nil
}

func (h *fakeHypervisor) AllocateMAC(ctx context.Context) (net.HardwareAddr, func(), error) {
	return net.HardwareAddr{0x58, 0x9c, 0xfc, 0x01, 0x02, 0x03}, func() {}, nil
}

func (h *fakeHypervisor) SetConf(ctx context.Context, name string, kv ...string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("setconf %s %s", name, strings.Join(kv, " "))
	if h.failSetConf != nil {
		return h.failSetConf
	}
	v, ok := h.vms[name]
	if !ok {
		return vmbhyve.ErrNotFound
	}
	for _, pair := range kv {
		k, val, _ := strings.Cut(pair, "=")
		v.conf[k] = val
	}
	return nil
}

func (h *fakeHypervisor) ReadConf(name string) (map[string]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[name]
	if !ok {
		return nil, fmt.Errorf("read conf of VM %s: %w", name, vmbhyve.ErrNotFound)
	}
	out := map[string]string{}
	for k, val := range v.conf {
		out[k] = val
	}
	return out, nil
}

// Boot records the start, then walks through h.boot: Running succeeds, and
// when the states run out Boot blocks until its context ends. failBoot is
// what a guest that stopped instead reports (a *vmbhyve.BootError from the
// real driver).
func (h *fakeHypervisor) Boot(ctx context.Context, name string) (vmbhyve.VM, error) {
	h.mu.Lock()
	h.record("start %s", name)
	failStart, failBoot, seq := h.failStart, h.failBoot, h.boot
	h.mu.Unlock()
	if failStart != nil {
		return vmbhyve.VM{}, failStart
	}
	for _, st := range seq {
		h.mu.Lock()
		if v, exists := h.vms[name]; exists {
			v.state = st
		}
		h.mu.Unlock()
		if st == vmbhyve.StateRunning {
			return vmbhyve.VM{Name: name, State: st, StateText: string(st)}, nil
		}
	}
	if failBoot != nil {
		return vmbhyve.VM{}, failBoot
	}
	<-ctx.Done()
	return vmbhyve.VM{}, fmt.Errorf("waiting for %s: %w", name, ctx.Err())
}

func (h *fakeHypervisor) Stop(ctx context.Context, name string, acpiTimeout time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if acpiTimeout > 0 {
		h.record("stop %s (ACPI grace %s)", name, acpiTimeout)
	} else {
		h.record("stop %s", name) // the driver's immediate `vm poweroff -f`
	}
	if h.failStop != nil {
		return h.failStop
	}
	v, ok := h.vms[name]
	if !ok {
		return vmbhyve.ErrNotFound
	}
	v.state = vmbhyve.StateStopped
	return nil
}

func (h *fakeHypervisor) Destroy(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record("destroy %s", name)
	if h.failDestroy != nil {
		return h.failDestroy
	}
	if _, ok := h.vms[name]; !ok {
		return vmbhyve.ErrNotFound
	}
	delete(h.vms, name)
	return nil
}

// fakeLeases hands out an address, or blocks until the context ends.
type fakeLeases struct {
	ip    netip.Addr
	never bool
	asked []string
	mu    sync.Mutex
}

func (l *fakeLeases) WaitAddress(ctx context.Context, mac net.HardwareAddr) (Address, error) {
	l.mu.Lock()
	l.asked = append(l.asked, mac.String())
	l.mu.Unlock()
	if l.never {
		<-ctx.Done()
		return Address{}, fmt.Errorf("no lease for %s: %w", mac, ctx.Err())
	}
	return Address{IP: l.ip, Source: "leases.csv line 2"}, nil
}

// fakeSSH connects, or fails with err.
type fakeSSH struct {
	err       error
	templates []string
	pins      []HostKeyPin
	conn      *fakeConn
}

func (s *fakeSSH) Connect(ctx context.Context, addr netip.Addr, pin HostKeyPin) (Conn, error) {
	s.templates = append(s.templates, pin.Template)
	s.pins = append(s.pins, pin)
	if s.err != nil {
		return nil, s.err
	}
	s.conn = &fakeConn{}
	return s.conn, nil
}

type fakeConn struct {
	mu      sync.Mutex
	scripts []string
	closed  int
	exitErr error
}

func (c *fakeConn) Run(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) error {
	b, _ := io.ReadAll(stdin)
	c.mu.Lock()
	c.scripts = append(c.scripts, command+": "+string(b))
	c.mu.Unlock()
	fmt.Fprintf(stdout, "ran %d bytes\n", len(b))
	return c.exitErr
}

func (c *fakeConn) Ping(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed > 0 {
		return fmt.Errorf("closed")
	}
	return nil
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed++
	return nil
}

// phases records what the Observer saw.
type phases struct {
	mu   sync.Mutex
	seen []string
}

func (p *phases) PhaseStarted(vm string, ph Phase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, "start "+string(ph))
}

func (p *phases) PhaseDone(vm string, ph Phase, took time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	status := "ok"
	if err != nil {
		status = "failed"
	}
	p.seen = append(p.seen, "done "+string(ph)+" "+status)
}
