package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// keaConfig renders the DHCPv4 server configuration: a memfile lease file
// at the configured path, match-client-id off (template clones may send the
// same client id) and no routers option (guests get no route off the bridge).
func keaConfig(cfg *simstate.Config, lfcInterval int) ([]byte, error) {
	prefix, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil {
		return nil, fmt.Errorf("subnet %q: %w", cfg.Subnet, err)
	}
	first, last := poolRange(prefix)
	valid := cfg.ValidLifetime
	conf := map[string]any{
		"Dhcp4": map[string]any{
			"interfaces-config": map[string]any{
				"interfaces":       []string{cfg.Bridge},
				"dhcp-socket-type": "raw",
				// Keep trying if the bridge was not ready yet.
				"service-sockets-max-retries":     100,
				"service-sockets-retry-wait-time": 200,
			},
			"control-socket": map[string]any{
				"socket-type": "unix",
				"socket-name": cfg.KeaSocket,
			},
			"lease-database": map[string]any{
				"type":         "memfile",
				"persist":      true,
				"name":         cfg.LeaseFile,
				"lfc-interval": lfcInterval,
			},
			"valid-lifetime":  valid,
			"renew-timer":     valid / 2,
			"rebind-timer":    valid * 7 / 8,
			"match-client-id": false,
			"authoritative":   true,
			"subnet4": []any{map[string]any{
				"id":        1,
				"subnet":    prefix.Masked().String(),
				"pools":     []any{map[string]any{"pool": first.String() + " - " + last.String()}},
				"interface": cfg.Bridge,
			}},
			"loggers": []any{map[string]any{
				"name":           "kea-dhcp4",
				"output_options": []any{map[string]any{"output": filepath.Join(cfg.LogDir(), "kea-dhcp4.log")}},
				"severity":       "INFO",
			}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// hostAddr is the host's address on the bridge: the subnet's first address.
func hostAddr(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// poolRange leaves a few addresses for the host and hands out the rest.
func poolRange(p netip.Prefix) (netip.Addr, netip.Addr) {
	base := p.Masked().Addr()
	size := uint64(1) << (32 - p.Bits())
	skip := uint64(10)
	if size < 32 {
		skip = 2
	}
	first := base
	for i := uint64(0); i < skip; i++ {
		first = first.Next()
	}
	last := base
	for i := uint64(0); i < size-2; i++ {
		last = last.Next()
	}
	return first, last
}

func writeKeaConfig(cfg *simstate.Config, lfcInterval int) error {
	b, err := keaConfig(cfg, lfcInterval)
	if err != nil {
		return err
	}
	return simstate.WriteFileAtomic(cfg.KeaConfig, append(b, '\n'), 0o644)
}

// startKea runs kea-dhcp4 inside the host namespace, detached so the host
// outlives `bhyve-sim up`.
func startKea(ctx context.Context, cfg *simstate.Config) error {
	if err := os.MkdirAll(filepath.Dir(cfg.LeaseFile), 0o755); err != nil {
		return fmt.Errorf("lease file directory: %w", err)
	}
	if err := writeKeaConfig(cfg, cfg.LFCInterval); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(cfg.LogDir(), "kea-dhcp4.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kea log: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(cfg.Tools.Nsenter, "--net="+netnsPath(cfg.NetNS), "--",
		cfg.Tools.KeaDHCP4, "-c", cfg.KeaConfig)
	cmd.Env = append(os.Environ(),
		"KEA_PIDFILE_DIR="+cfg.RunDir(),
		"KEA_LOCKFILE_DIR="+cfg.RunDir(),
		"KEA_LFC_EXECUTABLE="+cfg.Tools.KeaLFC,
		cfg.Marker())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kea-dhcp4: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := keaCommand(ctx, cfg, "status-get"); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(cfg.LogDir(), "kea-dhcp4.out"))
			return fmt.Errorf("kea-dhcp4 exited during start-up (%v): %s", err, tail(string(log), 2000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("kea-dhcp4 did not answer on its control socket within 15s")
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// keaCommand sends one command over Kea's unix control socket.
func keaCommand(ctx context.Context, cfg *simstate.Config, command string) (map[string]any, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", cfg.KeaSocket)
	if err != nil {
		return nil, fmt.Errorf("kea control socket: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if _, err := fmt.Fprintf(conn, `{"command": %q}`, command); err != nil {
		return nil, fmt.Errorf("kea %s: %w", command, err)
	}
	b, err := io.ReadAll(conn)
	if err != nil && len(b) == 0 {
		return nil, fmt.Errorf("kea %s: %w", command, err)
	}
	var resp map[string]any
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("kea %s: bad answer %q: %w", command, b, err)
	}
	if r, _ := resp["result"].(float64); r != 0 {
		return resp, fmt.Errorf("kea %s: %v", command, resp["text"])
	}
	return resp, nil
}

// RunLFC makes the real Kea run its lease file cleanup now. Kea 2.2 has no
// command for that, so the lease database is reconfigured with a one-second
// lfc-interval: Kea's own timer then rotates the lease file to .1 and runs
// the real kea-lfc (.1/.2 -> .output -> .completed -> .2). Once that
// finished the configured interval is restored.
func RunLFC(ctx context.Context, cfg *simstate.Config) error {
	lock, err := os.OpenFile(filepath.Join(cfg.RunDir(), "lfc.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lfc lock: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lfc lock: %w", err)
	}
	start := time.Now()
	restore := func() error {
		if err := writeKeaConfig(cfg, cfg.LFCInterval); err != nil {
			return err
		}
		_, err := keaCommand(context.WithoutCancel(ctx), cfg, "config-reload")
		return err
	}
	if err := writeKeaConfig(cfg, 1); err != nil {
		return err
	}
	if _, err := keaCommand(ctx, cfg, "config-reload"); err != nil {
		return errors.Join(err, restore())
	}
	werr := waitLFC(ctx, cfg.LeaseFile, start)
	return errors.Join(werr, restore())
}

// waitLFC waits until a cleanup that began after start has completed: a
// fresh .2 exists and no .1, .output, .completed or live kea-lfc remains.
func waitLFC(ctx context.Context, lease string, start time.Time) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if lfcDone(lease, start) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("kea did not complete a lease file cleanup within 30s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func lfcDone(lease string, start time.Time) bool {
	st, err := os.Stat(lease + ".2")
	if err != nil || !st.ModTime().After(start) {
		return false
	}
	for _, suf := range []string{".1", ".output", ".completed"} {
		if _, err := os.Stat(lease + suf); !errors.Is(err, fs.ErrNotExist) {
			return false
		}
	}
	if b, err := os.ReadFile(lease + ".pid"); err == nil {
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && syscall.Kill(pid, 0) == nil {
			return false
		}
	}
	return true
}
