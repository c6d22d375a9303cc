package jobvm

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/hostmem"
)

func vars(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseResources(t *testing.T) {
	tests := []struct {
		name    string
		get     func(string) string
		want    Resources
		wantErr []string
	}{
		{"unset", vars(), Resources{}, nil},
		{"both", vars(VarCPUs, "4", VarMemory, "2G"), Resources{CPUs: 4, Memory: 2 * hostmem.GiB}, nil},
		{"megabytes", vars(VarMemory, "1536M"), Resources{Memory: 1536 * hostmem.MiB}, nil},
		{"cpus zero", vars(VarCPUs, "0"), Resources{}, []string{`BHYVE_CPUS "0" is not a number of vCPUs; expected a whole number of 1 or more`}},
		{"cpus word", vars(VarCPUs, "four"), Resources{}, []string{`BHYVE_CPUS "four"`}},
		{"cpus shell", vars(VarCPUs, "4; reboot"), Resources{}, []string{`BHYVE_CPUS "4; reboot"`}},
		{"cpus negative", vars(VarCPUs, "-1"), Resources{}, []string{`BHYVE_CPUS "-1"`}},
		{"memory no unit", vars(VarMemory, "2048"), Resources{}, []string{`BHYVE_MEMORY "2048" is not a memory size; expected a whole number with the unit M or G`}},
		{"memory newline", vars(VarMemory, "2G\nuuid=x"), Resources{}, []string{`BHYVE_MEMORY "2G\nuuid=x" is not a memory size`}},
		{"both wrong, both said", vars(VarCPUs, "x", VarMemory, "y"), Resources{}, []string{`BHYVE_CPUS "x"`, `BHYVE_MEMORY "y"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseResources(tc.get)
			if tc.wantErr == nil {
				if err != nil || got != tc.want {
					t.Fatalf("ParseResources = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if failure.KindOf(err) != failure.Config {
				t.Fatalf("ParseResources error %v is %s, want a configuration error", err, failure.KindOf(err))
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestResolveSize(t *testing.T) {
	tmpl := map[string]string{"cpu": "2", "memory": "1024M"}
	where := func(k string) string { return "bhyve.toml: runners.\"r\"." + k }
	capped := Limits{MaxCPUs: 8, MaxMemory: 4 * hostmem.GiB, Where: where}
	tests := []struct {
		name    string
		conf    map[string]string
		req     Resources
		lim     Limits
		want    Size
		wantErr string
	}{
		{"no request: the template's", tmpl, Resources{}, capped,
			Size{CPUs: 2, Memory: hostmem.GiB, From: "template t's size"}, ""},
		{"memory within the cap", tmpl, Resources{Memory: 2 * hostmem.GiB}, capped,
			Size{CPUs: 2, Memory: 2 * hostmem.GiB, Set: []string{"memory=2G"}, From: "BHYVE_MEMORY; the rest is template t's"}, ""},
		{"both at the caps", tmpl, Resources{CPUs: 8, Memory: 4 * hostmem.GiB}, capped,
			Size{CPUs: 8, Memory: 4 * hostmem.GiB, Set: []string{"cpu=8", "memory=4G"}, From: "BHYVE_CPUS, BHYVE_MEMORY"}, ""},
		{"smaller than the template", tmpl, Resources{CPUs: 1, Memory: 512 * hostmem.MiB}, Limits{},
			Size{CPUs: 1, Memory: 512 * hostmem.MiB, Set: []string{"cpu=1", "memory=512M"}, From: "BHYVE_CPUS, BHYVE_MEMORY"}, ""},
		{"asking for the template's size changes nothing", tmpl, Resources{CPUs: 2, Memory: hostmem.GiB}, capped,
			Size{CPUs: 2, Memory: hostmem.GiB, From: "BHYVE_CPUS, BHYVE_MEMORY"}, ""},
		{"memory above the cap names it", tmpl, Resources{Memory: 5 * hostmem.GiB}, capped, Size{},
			`BHYVE_MEMORY 5G is above max_memory 4G (bhyve.toml: runners."r".max_memory); ask for at most 4G, or raise max_memory`},
		{"cpus above the cap names it", tmpl, Resources{CPUs: 9}, capped, Size{},
			`BHYVE_CPUS 9 is above max_cpus 8 (bhyve.toml: runners."r".max_cpus)`},
		{"unset cap is the template's memory", tmpl, Resources{Memory: 2 * hostmem.GiB}, Limits{}, Size{},
			`BHYVE_MEMORY 2G is above max_memory 1G (max_memory is not set, so it is the template's memory=1024M)`},
		{"unset cap is the template's cpu", tmpl, Resources{CPUs: 3}, Limits{}, Size{},
			`BHYVE_CPUS 3 is above max_cpus 2 (max_cpus is not set, so it is the template's cpu=2)`},
		{"topology fixed by the template", map[string]string{"cpu": "4", "memory": "1G", "cpu_sockets": "2", "cpu_cores": "2"}, Resources{CPUs: 2}, capped, Size{},
			`template t fixes its CPU topology (cpu_sockets=2, cpu_cores=2)`},
		{"template without cpu", map[string]string{"memory": "1G"}, Resources{}, capped, Size{},
			`template t has cpu="" in its conf`},
		{"template with a bad memory", map[string]string{"cpu": "1", "memory": "lots"}, Resources{}, capped, Size{},
			`template t: memory="lots" is not a size bhyve accepts`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveSize("t", tc.conf, tc.req, tc.lim)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("resolveSize = %+v, %v; want error containing %q", got, err, tc.wantErr)
				}
				if failure.KindOf(err) != failure.Config {
					t.Fatalf("error %v is %s, want a configuration error", err, failure.KindOf(err))
				}
				return
			}
			if err != nil || got.String() != tc.want.String() || strings.Join(got.Set, " ") != strings.Join(tc.want.Set, " ") {
				t.Fatalf("resolveSize = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// gauge is free memory a test changes while an admission waits.
type gauge struct {
	mu    sync.Mutex
	free  hostmem.Size
	err   error
	reads int
}

func (g *gauge) FreeMemory(context.Context) (hostmem.Size, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reads++
	return g.free, g.err
}

func (g *gauge) set(free hostmem.Size) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.free = free
}

func TestAdmit(t *testing.T) {
	old := admissionPoll
	admissionPoll = 10 * time.Millisecond
	t.Cleanup(func() { admissionPoll = old })
	lim := Limits{Reserve: hostmem.GiB, Where: func(k string) string { return "FILE: " + k }}
	ctx := context.Background()

	t.Run("fits above the reserve", func(t *testing.T) {
		if err := Admit(ctx, &gauge{free: 3 * hostmem.GiB}, 2*hostmem.GiB, lim, 0, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("would eat into the reserve: refused at once without a wait", func(t *testing.T) {
		g := &gauge{free: 3*hostmem.GiB - 1}
		err := Admit(ctx, g, 2*hostmem.GiB, lim, 0, nil)
		var ae *AdmissionError
		if !errors.As(err, &ae) || ae.Need != 2*hostmem.GiB || ae.Free != 3*hostmem.GiB-1 {
			t.Fatalf("Admit = %v, want an *AdmissionError for 2G of 3G-1", err)
		}
		if want := "not starting a VM with 2G memory: the host has 3.0G free, and starting it would leave less than memory_reserve 1G (FILE: memory_reserve)"; err.Error() != want {
			t.Fatalf("message %q, want %q", err, want)
		}
		if failure.KindOf(err) != failure.System || g.reads != 1 {
			t.Fatalf("kind %s after %d reads; want a system failure after one read", failure.KindOf(err), g.reads)
		}
	})
	t.Run("more than the host has", func(t *testing.T) {
		err := Admit(ctx, &gauge{free: hostmem.GiB}, 2*hostmem.GiB, Limits{}, 0, nil)
		var ae *AdmissionError
		if !errors.As(err, &ae) {
			t.Fatalf("Admit = %v, want refused", err)
		}
	})
	t.Run("waits until memory frees up", func(t *testing.T) {
		g := &gauge{free: hostmem.GiB}
		var logged []string
		go func() { time.Sleep(50 * time.Millisecond); g.set(4 * hostmem.GiB) }()
		start := time.Now()
		err := Admit(ctx, g, 2*hostmem.GiB, lim, 5*time.Second, func(f string, a ...any) { logged = append(logged, f) })
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
			t.Fatalf("admitted after %s; want after the memory came back (50ms)", took)
		}
		if len(logged) != 1 || !strings.HasPrefix(logged[0], "Waiting up to") {
			t.Fatalf("job log %q, want one line saying it waits", logged)
		}
	})
	t.Run("wait ends refused", func(t *testing.T) {
		err := Admit(ctx, &gauge{free: hostmem.GiB}, 2*hostmem.GiB, lim, 100*time.Millisecond, nil)
		var ae *AdmissionError
		if !errors.As(err, &ae) || ae.Waited < 100*time.Millisecond || !strings.Contains(err.Error(), "for memory to free up") {
			t.Fatalf("Admit = %v, want refused after waiting 100ms", err)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		err := Admit(cctx, &gauge{free: hostmem.GiB}, 2*hostmem.GiB, lim, time.Minute, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Admit = %v, want the context's end", err)
		}
	})
	t.Run("unreadable free memory is never an admission", func(t *testing.T) {
		err := Admit(ctx, &gauge{err: errors.New("sysctl: unknown oid")}, hostmem.MiB, lim, 0, nil)
		var ae *AdmissionError
		if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "unknown oid") {
			t.Fatalf("Admit = %v, want the read error", err)
		}
	})
}
