package jobvm

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/vmbhyve"
)

// The CI variables a job sets to size its VM, named to read naturally in
// .gitlab-ci.yml.
const (
	VarCPUs   = "BHYVE_CPUS"
	VarMemory = "BHYVE_MEMORY"
)

// Resources is what a job asks for; a zero field means the template's.
type Resources struct {
	CPUs   int
	Memory hostmem.Size
}

// cpusRE: a whole number without sign, spaces or leading zeros; three
// digits are more than any bhyve host has (hw.vmm.maxcpu).
var cpusRE = regexp.MustCompile(`^[1-9][0-9]{0,2}$`)

// ParseResources reads BHYVE_CPUS and BHYVE_MEMORY through get, which
// returns a job variable's value ("" when unset). Anything that is not a
// plain number or size is a configuration error saying what to write: the
// values end up in the clone's conf, so nothing else may pass.
func ParseResources(get func(name string) string) (Resources, error) {
	var r Resources
	var errs []error
	if v := get(VarCPUs); v != "" {
		if cpusRE.MatchString(v) {
			r.CPUs, _ = strconv.Atoi(v)
		} else {
			errs = append(errs, fmt.Errorf("%s %q is not a number of vCPUs; expected a whole number of 1 or more, such as \"4\"", VarCPUs, v))
		}
	}
	if v := get(VarMemory); v != "" {
		m, err := hostmem.ParseSize(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %w", VarMemory, err))
		}
		r.Memory = m
	}
	if len(errs) > 0 {
		return Resources{}, failure.Configf("%w", errors.Join(errs...))
	}
	return r, nil
}

// Size is what a VM runs with.
type Size struct {
	CPUs   int
	Memory hostmem.Size
	// Set lists the conf assignments that differ from the template's
	// (cpu=4, memory=8G), written into the clone before it starts. Empty:
	// the template's size, which a warm pool VM has.
	Set []string
	// From says where the figures came from, for the job log.
	From string
}

func (s Size) String() string {
	return fmt.Sprintf("%d CPUs, %s memory (%s)", s.CPUs, s.Memory, s.From)
}

// Limits are the operator's bounds on requests and the memory admission
// keeps free.
type Limits struct {
	MaxCPUs   int          // 0: the template's cpu
	MaxMemory hostmem.Size // 0: the template's memory
	Reserve   hostmem.Size
	// Where names a settings key (max_cpus, max_memory, memory_reserve)
	// where the operator finds it; nil names the key alone.
	Where func(key string) string
}

func (l Limits) where(key string) string {
	if l.Where == nil {
		return key
	}
	return l.Where(key)
}

// templateSize reads the size a template's clones have unless a job asks
// otherwise: cpu= and memory= of its conf, as vm-bhyve passes them to
// bhyve -c and -m (vm::__cpu, vm::run).
func templateSize(template string, conf map[string]string) (Size, error) {
	cpus, err := strconv.Atoi(conf["cpu"])
	if err != nil || cpus < 1 {
		return Size{}, failure.Configf("template %s has cpu=%q in its conf; expected a number of vCPUs (vm-bhyve will not start a VM without one)", template, conf["cpu"])
	}
	mem, err := hostmem.ParseConfMemory(conf["memory"])
	if err != nil {
		return Size{}, failure.Configf("template %s: %w", template, err)
	}
	return Size{CPUs: cpus, Memory: mem, From: "template " + template + "'s size"}, nil
}

// resolveSize applies a job's request to the template's size, within the
// caps; a cap left unset is the template's own size.
func resolveSize(template string, conf map[string]string, req Resources, lim Limits) (Size, error) {
	size, err := templateSize(template, conf)
	if err != nil {
		return Size{}, err
	}
	var from []string
	if req.CPUs > 0 {
		maxCPUs, capFrom := lim.MaxCPUs, lim.where("max_cpus")
		if maxCPUs == 0 {
			maxCPUs, capFrom = size.CPUs, "max_cpus is not set, so it is the template's cpu="+strconv.Itoa(size.CPUs)
		}
		if req.CPUs > maxCPUs {
			return Size{}, failure.Configf("%s %d is above max_cpus %d (%s); ask for at most %d, or raise max_cpus", VarCPUs, req.CPUs, maxCPUs, capFrom, maxCPUs)
		}
		if topo := cpuTopology(conf); topo != "" && req.CPUs != size.CPUs {
			return Size{}, failure.Configf("%s %d cannot be applied: template %s fixes its CPU topology (%s), which must multiply to cpu; remove %s, or set the topology in a template of that size", VarCPUs, req.CPUs, template, topo, VarCPUs)
		}
		if req.CPUs != size.CPUs {
			size.CPUs = req.CPUs
			size.Set = append(size.Set, "cpu="+strconv.Itoa(req.CPUs))
		}
		from = append(from, VarCPUs)
	}
	if req.Memory > 0 {
		maxMem, capFrom := lim.MaxMemory, lim.where("max_memory")
		if maxMem == 0 {
			maxMem, capFrom = size.Memory, "max_memory is not set, so it is the template's memory="+conf["memory"]
		}
		if req.Memory > maxMem {
			return Size{}, failure.Configf("%s %s is above max_memory %s (%s); ask for at most %s, or raise max_memory", VarMemory, req.Memory, maxMem, capFrom, maxMem)
		}
		if req.Memory != size.Memory {
			size.Memory = req.Memory
			size.Set = append(size.Set, "memory="+req.Memory.String())
		}
		from = append(from, VarMemory)
	}
	if len(from) > 0 {
		size.From = strings.Join(from, ", ")
		if len(from) == 1 {
			size.From += "; the rest is template " + template + "'s"
		}
	}
	return size, nil
}

func cpuTopology(conf map[string]string) string {
	var parts []string
	for _, k := range []string{"cpu_sockets", "cpu_cores", "cpu_threads"} {
		if v := conf[k]; v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, ", ")
}

// MemoryGauge reads how much memory the host can give a new VM now.
type MemoryGauge interface {
	FreeMemory(ctx context.Context) (hostmem.Size, error)
}

// AdmissionError says a VM was not started because its memory would eat
// into the host's reserve. It is a system failure: memory frees up.
type AdmissionError struct {
	Need, Free, Reserve hostmem.Size
	ReserveWhere        string
	Waited              time.Duration
}

func (e *AdmissionError) Error() string {
	msg := fmt.Sprintf("not starting a VM with %s memory: the host has %s free, and starting it would leave less than memory_reserve %s (%s)",
		e.Need, e.Free.Human(), e.Reserve, e.ReserveWhere)
	if e.Waited > 0 {
		msg += fmt.Sprintf("; waited %s for memory to free up", e.Waited.Round(time.Second))
	}
	return msg
}

// admissionPoll is how often a waiting admission reads free memory again.
var admissionPoll = time.Second

// Admit checks that need fits in the host's free memory above the reserve,
// waiting up to wait (0: not at all) for it to free up. A gauge that cannot
// be read is an error of its own, never an admission.
func Admit(ctx context.Context, g MemoryGauge, need hostmem.Size, lim Limits, wait time.Duration, logf Logf) error {
	start := time.Now()
	var deadline <-chan time.Time
	logged := false
	for {
		free, err := g.FreeMemory(ctx)
		if err != nil {
			return fmt.Errorf("admission: %w", err)
		}
		if free >= need && free-need >= lim.Reserve {
			return nil
		}
		refused := &AdmissionError{Need: need, Free: free, Reserve: lim.Reserve, ReserveWhere: lim.where("memory_reserve"), Waited: time.Since(start)}
		if wait <= 0 {
			refused.Waited = 0
			return refused
		}
		if deadline == nil {
			deadline = time.After(wait)
		}
		if !logged && logf != nil {
			logf("Waiting up to %s for host memory: %s free, the VM needs %s and memory_reserve is %s", wait, free.Human(), need, lim.Reserve)
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", refused, ctx.Err())
		case <-deadline:
			refused.Waited = time.Since(start)
			return refused
		case <-time.After(admissionPoll):
		}
	}
}

// Size is the size the Manager's job gets: its request applied to the
// template's conf, within the caps.
func (m *Manager) Size() (Size, error) {
	conf, err := m.VMs.ReadConf(m.Config.Template)
	if err != nil {
		return Size{}, fmt.Errorf("read template %s's size: %w", m.Config.Template, err)
	}
	return resolveSize(m.Config.Template, conf, m.Config.Resources, m.Config.Limits)
}

// sizeAndAdmit runs before the clone: a request the caps refuse fails the
// job before anything is made, and a VM the host cannot hold is not cloned.
// A template that does not exist is left for the clone to report, which
// says so in the terms of vm-bhyve.
func (m *Manager) sizeAndAdmit(ctx context.Context, logf Logf) (Size, error) {
	size, err := m.Size()
	if errors.Is(err, vmbhyve.ErrNotFound) {
		return Size{}, nil
	}
	if err != nil {
		return Size{}, err
	}
	logf("VM size: %s", size)
	if m.Memory != nil {
		if err := Admit(ctx, m.Memory, size.Memory, m.Config.Limits, m.Config.AdmissionWait, logf); err != nil {
			return Size{}, err
		}
	}
	return size, nil
}

// writeSize puts a job's requested size into the clone's conf, where
// `vm start` reads it; a VM of the template's size needs no write.
func (m *Manager) writeSize(ctx context.Context, name string, size Size) error {
	if len(size.Set) == 0 {
		return nil
	}
	if err := m.VMs.SetConf(ctx, name, size.Set...); err != nil {
		return fmt.Errorf("write the VM size (%s) into %s's config: %w", strings.Join(size.Set, " "), name, err)
	}
	return nil
}
