package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/sysrc"
)

// Lease is one row of a Kea 2.2 memfile lease file.
type Lease struct {
	Address       netip.Addr
	HWAddr        string
	ValidLifetime int64
	Expire        time.Time
	Hostname      string
	State         int
}

// ReadLeaseFile parses one Kea lease file by its header (a missing file is
// no rows). A final line without newline may be half written and is
// skipped.
func ReadLeaseFile(path string) ([]Lease, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var col map[string]int
	var out []Lease
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		fields := strings.Split(strings.TrimRight(line, "\r\n"), ",")
		if col == nil {
			col = map[string]int{}
			for i, h := range fields {
				col[h] = i
			}
			continue
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(fields) {
				return fields[i]
			}
			return ""
		}
		addr, err := netip.ParseAddr(get("address"))
		if err != nil {
			continue
		}
		valid, _ := strconv.ParseInt(get("valid_lifetime"), 10, 64)
		expire, _ := strconv.ParseInt(get("expire"), 10, 64)
		state, _ := strconv.Atoi(get("state"))
		out = append(out, Lease{
			Address: addr, HWAddr: strings.ToLower(get("hwaddr")), ValidLifetime: valid,
			Expire: time.Unix(expire, 0), Hostname: get("hostname"), State: state,
		})
	}
	return out, nil
}

// LeaseFiles lists the lease files in Kea's own load order: .completed if
// present, else .2 then .1, then the current file.
func (h *Host) LeaseFiles() []string {
	lf := h.cfg.LeaseFile
	files := []string{lf + ".2", lf + ".1"}
	if _, err := os.Stat(lf + ".completed"); err == nil {
		files = []string{lf + ".completed"}
	}
	return append(files, lf)
}

// Lease finds the active lease of a MAC across all lease files.
func (h *Host) Lease(mac string) (netip.Addr, bool, error) {
	byAddr := map[netip.Addr]Lease{}
	for _, f := range h.LeaseFiles() {
		rows, err := ReadLeaseFile(f)
		if err != nil {
			return netip.Addr{}, false, err
		}
		for _, l := range rows {
			if l.ValidLifetime == 0 {
				delete(byAddr, l.Address)
				continue
			}
			byAddr[l.Address] = l
		}
	}
	var best Lease
	found := false
	for _, l := range byAddr {
		if l.HWAddr == strings.ToLower(mac) && l.State == 0 && l.Expire.After(time.Now()) &&
			(!found || l.Expire.After(best.Expire)) {
			best, found = l, true
		}
	}
	return best.Address, found, nil
}

// WaitLease polls the lease files until the MAC has a lease.
func (h *Host) WaitLease(ctx context.Context, mac string) (netip.Addr, error) {
	for {
		a, ok, err := h.Lease(mac)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("no lease for %s: %w", mac, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// GuestMAC reads network0_mac from a VM's NAME.conf.
func (h *Host) GuestMAC(name string) (string, error) {
	v, ok, err := sysrc.Get([]string{h.cfg.ConfPath(name)}, "network0_mac")
	if err != nil {
		return "", err
	}
	if !ok || v == "" {
		return "", fmt.Errorf("%s has no network0_mac yet", name)
	}
	return v, nil
}

// GuestAddr waits for a VM's MAC to be in NAME.conf and for its lease, as
// the executor does.
func (h *Host) GuestAddr(ctx context.Context, name string) (netip.Addr, error) {
	for {
		mac, err := h.GuestMAC(name)
		if err == nil {
			return h.WaitLease(ctx, mac)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("guest %s: %w (%v)", name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
