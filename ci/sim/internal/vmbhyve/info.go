package vmbhyve

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/zfs"
)

// info is info::guest: the named guests (first unknown one is an error) or
// every guest.
func (v *vm) info(args []string) error {
	run := v.runningLoad()
	if len(args) > 0 && args[0] != "" {
		for _, name := range args {
			if name == "" {
				break
			}
			if !v.guestExists(name) {
				return v.errf("unable to locate virtual machine '%s'", name)
			}
			v.guestShow(run, name)
		}
		return nil
	}
	for _, name := range v.guests() {
		v.guestShow(run, name)
	}
	return nil
}

// guestShow is info::guest_show.
func (v *vm) guestShow(run running, name string) {
	c := loadConf(v.cfg.ConfPath(name))
	const in = "  "
	out := func(format string, args ...any) { fmt.Fprintf(v.stdout, format+"\n", args...) }
	conf := func(indent, key, title, def string) {
		if title == "" {
			title = key
		}
		if def == "" {
			def = "-"
		}
		out("%s%s: %s", indent, title, c.str(key, def))
	}
	vmm := v.vmmExists(name)
	state, pid, _ := run.check(v, name)

	out("------------------------")
	out("Virtual Machine: %s", name)
	out("------------------------")
	out("%sstate: %s", in, strings.ToLower(state))
	out("%sdatastore: default", in)
	conf(in, "loader", "", "none")
	conf(in, "uuid", "", "auto")
	conf(in, "cpu", "", "")
	if s := c.str("cpu_sockets", ""); s != "" {
		line := in + "cpu-topology: sockets=" + s
		if x := c.str("cpu_cores", ""); x != "" {
			line += ", cores=" + x
		}
		if x := c.str("cpu_threads", ""); x != "" {
			line += ", threads=" + x
		}
		out("%s", line)
	}
	conf(in, "memory", "", "")

	if vmm {
		if pid != 0 {
			if res := residentBytes(pid); res > 0 {
				out("%smemory-resident: %d (%s)", in, res, bytesHuman(float64(res), 3, 1))
			}
		}
		if b, err := os.ReadFile(filepath.Join(v.cfg.VMPath(name), "console")); err == nil {
			out("")
			out("%sconsole-ports", in)
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, _, _ := strings.Cut(l, "=")
				val := l[strings.LastIndex(l, "=")+1:]
				out("%s%s%s: %s", in, in, k, val)
			}
		}
	}

	// info::guest_networking
	const in4 = "    "
	links := v.hostLinks()
	for n := 0; ; n++ {
		if c.str(fmt.Sprintf("network%d_type", n), "") == "" {
			break
		}
		out("")
		out("  network-interface")
		out("%snumber: %d", in4, n)
		conf(in4, fmt.Sprintf("network%d_type", n), "emulation", "")
		conf(in4, fmt.Sprintf("network%d_switch", n), "virtual-switch", "")
		conf(in4, fmt.Sprintf("network%d_mac", n), "fixed-mac-address", "")
		conf(in4, fmt.Sprintf("network%d_device", n), "fixed-device", "")
		if vmm {
			var l *link
			prefix := fmt.Sprintf("vmnet/%s/%d/", name, n)
			for i := range links {
				if strings.HasPrefix(links[i].Alias, prefix) {
					l = &links[i]
					break
				}
			}
			if l == nil {
				out("%sactive-device: -", in4)
				out("%sdesc: -", in4)
				out("%smtu: ", in4)
				out("%sbridge: -", in4)
				continue
			}
			out("%sactive-device: %s", in4, l.Name)
			out("%sdesc: %s", in4, l.Alias)
			out("%smtu: %d", in4, l.MTU)
			out("%sbridge: %s", in4, orDefault(v.vmSwitchBridge(l.Master), "-"))
			rx, tx := l.Stats.RX.Bytes, l.Stats.TX.Bytes
			out("%sbytes-in: %d (%s)", in4, rx, bytesHuman(float64(rx), 3, 1))
			out("%sbytes-out: %d (%s)", in4, tx, bytesHuman(float64(tx), 3, 1))
		}
	}

	// info::guest_disks
	for n := 0; ; n++ {
		disk := c.str(fmt.Sprintf("disk%d_name", n), "")
		typ := c.str(fmt.Sprintf("disk%d_type", n), "")
		if disk == "" || typ == "" {
			break
		}
		dev := c.str(fmt.Sprintf("disk%d_dev", n), "file")
		out("")
		out("  virtual-disk")
		out("%snumber: %d", in4, n)
		conf(in4, fmt.Sprintf("disk%d_dev", n), "device-type", "file")
		conf(in4, fmt.Sprintf("disk%d_type", n), "emulation", "")
		conf(in4, fmt.Sprintf("disk%d_opts", n), "options", "")
		out("%ssystem-path: %s", in4, v.diskPath(name, disk, dev))
	}

	// info::guest_zfs
	var snaps []string
	origin := "-"
	_ = v.zfs.View(func(db *zfs.DB) error {
		list, err := db.ListRecursive(v.cfg.DatasetFor(name))
		if err != nil {
			return nil
		}
		type snapRow struct {
			line string
			t    int64
		}
		var rows []snapRow
		for _, d := range list {
			for _, s := range d.Snapshots {
				rows = append(rows, snapRow{
					line: fmt.Sprintf("%s@%s\t0B\t%s", d.Name, s.Name, s.Created.Format("Mon Jan _2 15:04 2006")),
					t:    s.Created.UnixNano(),
				})
			}
		}
		sort.SliceStable(rows, func(i, j int) bool { return rows[i].t < rows[j].t })
		for _, r := range rows {
			snaps = append(snaps, in4+r.line)
		}
		if list[0].Origin != "" {
			origin = list[0].Origin
		}
		return nil
	})
	if len(snaps) > 0 {
		out("")
		out("  snapshots")
		out("%s", strings.Join(snaps, "\n"))
	}
	if origin != "-" {
		out("")
		out("  clone-origin")
		out("    %s", origin)
	}
	out("")
}

// link is one interface of `ip -j -s link show` in the host namespace.
type link struct {
	Name   string `json:"ifname"`
	Alias  string `json:"ifalias"`
	MTU    int    `json:"mtu"`
	Master string `json:"master"`
	Stats  struct {
		RX struct {
			Bytes int64 `json:"bytes"`
		} `json:"rx"`
		TX struct {
			Bytes int64 `json:"bytes"`
		} `json:"tx"`
	} `json:"stats64"`
}

func (v *vm) hostLinks() []link {
	out, err := exec.Command(v.cfg.Tools.IP, "-n", v.cfg.NetNS, "-j", "-s", "link", "show").Output()
	if err != nil {
		return nil
	}
	var links []link
	_ = json.Unmarshal(out, &links)
	return links
}

func residentBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// vmSwitchBridge is info::__find_bridge: only bridges in interface group
// vm-switch (`ifconfig -g vm-switch`) are searched, and only standard
// switches put their bridge there (switch::standard::init). A manual
// switch's bridge, like the simulator's own, shows as "-".
func (v *vm) vmSwitchBridge(master string) string {
	core := v.coreConf()
	for _, sw := range strings.Fields(core.str("switch_list", "")) {
		if core.str("type_"+sw, "standard") == "standard" && master == "vm-"+sw {
			return master
		}
	}
	return ""
}
