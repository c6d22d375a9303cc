package vmbhyve

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/guest"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/ci/sim/internal/simstate"
)

// run is vm::run (`vm _run NAME`), the background supervisor of one guest.
// Exit status: 5 unknown guest, 10 already running, 15 fatal, otherwise
// bhyve's. Its errors only ever reach NAME/vm-bhyve.log.
func (v *vm) run(args []string) error {
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP)
	foreground, _, rest, err := v.parseArgs(args)
	if err != nil {
		return err
	}
	name := ""
	if len(rest) > 0 {
		name = rest[0]
	}
	if !v.guestExists(name) {
		return exitStatus(5)
	}
	if !v.confirmStopped(name, true) {
		return exitStatus(10)
	}

	v.seedISO(name)
	c := loadConf(v.cfg.ConfPath(name))
	memory := c.str("memory", "")
	loader := c.str("loader", "")
	bootdisk := c.str("disk0_name", "")
	bootdiskDev := c.str("disk0_dev", "file")
	hostbridge := c.str("hostbridge", "standard")
	comports := c.str("comports", "com1")
	uuid := c.str("uuid", "")
	debug := c.str("debug", "no")

	// Write a uuid on first start (clones lost theirs in vm::generalise).
	if uuid == "" {
		uuid = uuidgen()
		v.configSet(name, "uuid", uuid)
	}
	cpu := c.str("cpu", "")
	if cpu == "" {
		return v.errf("fatal; unable to determine cpu count")
	}
	if s := c.str("cpu_sockets", ""); s != "" {
		cpu += ",sockets=" + s
		if x := c.str("cpu_cores", ""); x != "" {
			cpu += ",cores=" + x
		}
		if x := c.str("cpu_threads", ""); x != "" {
			cpu += ",threads=" + x
		}
	}

	v.logRotate(name)
	v.guestLog(name,
		"initialising",
		" [loader: "+loader+"]",
		" [cpu: "+cpu+"]",
		" [memory: "+memory+"]",
		" [hostbridge: "+hostbridge+"]",
		" [com ports: "+comports+"]",
		" [uuid: "+uuid+"]",
		" [debug mode: "+debug+"]",
		" [primary disk: "+bootdisk+"]",
		" [primary disk dev: "+bootdiskDev+"]")
	if loader == "" || memory == "" {
		v.guestLog(name, "fatal; unable to start - missing required configuration")
		return exitStatus(15)
	}

	opts := "-AHPw"
	if c.yesno("ignore_msr", "") {
		opts += "w"
	}
	uefi := strings.SplitN(loader, "-", 2)[0] == "uefi"
	if uefi {
		bootrom, err := v.uefi(name, loader, c)
		if err != nil {
			return err
		}
		opts += " -l bootrom," + bootrom
	}
	if o := c.str("bhyve_options", ""); o != "" {
		opts += " " + o
	}
	if c.yesno("wired_memory", "") {
		opts += " -S"
	}
	opts = "-c " + cpu + " -m " + memory + " " + opts + " -U " + uuid
	if c.yesno("utctime", "yes") {
		opts += " -u"
	}
	diskPath := v.diskPath(name, bootdisk, bootdiskDev)

	// vm::bhyve_device_comports: the console file names the nmdm devices.
	dir := v.cfg.VMPath(name)
	_ = os.Remove(filepath.Join(dir, "console"))
	var console []string
	var comstring []string
	for i, port := range strings.Fields(comports) {
		if i == 0 && foreground {
			comstring = append(comstring, "-l "+port+",stdio")
			continue
		}
		dev := fmt.Sprintf("/dev/nmdm-%s.%d", name, i+1)
		console = append(console, port+"="+dev+"B")
		comstring = append(comstring, "-l "+port+","+dev+"A")
	}
	if len(console) > 0 {
		_ = os.WriteFile(filepath.Join(dir, "console"), []byte(strings.Join(console, "\n")+"\n"), 0o644)
	}
	devices := []string{"-s 0,hostbridge", "-s 31,lpc"}
	if strings.HasPrefix(hostbridge, "no") {
		devices = devices[1:]
	} else if hostbridge == "amd" {
		devices[0] = "-s 0,amd_hostbridge"
	}
	slot := 4
	for n := 0; ; n++ {
		dname := c.str(fmt.Sprintf("disk%d_name", n), "")
		dtype := c.str(fmt.Sprintf("disk%d_type", n), "")
		if dname == "" || dtype == "" {
			if n > 0 {
				slot++
			}
			break
		}
		devices = append(devices, fmt.Sprintf("-s 0:%d:%d,%s,%s", slot, n, dtype,
			v.diskPath(name, dname, c.str(fmt.Sprintf("disk%d_dev", n), "file"))))
	}

	// vm::bhyve_device_networking / switch::provision: a MAC for every NIC
	// lacking one, then a tap attached to the switch's bridge.
	var nics []guest.NIC
	// Each tap's unit stays reserved until this _run has destroyed the tap
	// (see provisionTap); closing a reservation releases it.
	var units []*os.File
	defer func() {
		for _, u := range units {
			u.Close()
		}
	}()
	for n := 0; ; n++ {
		emulation := c.str(fmt.Sprintf("network%d_type", n), "")
		if emulation == "" {
			break
		}
		mac := c.str(fmt.Sprintf("network%d_mac", n), "")
		if mac == "" {
			var msg string
			mac, msg = v.generateMAC(name, n)
			v.guestLog(name, msg)
			v.configSet(name, fmt.Sprintf("network%d_mac", n), mac)
		}
		sw := c.str(fmt.Sprintf("network%d_switch", n), "")
		nic, unit, err := v.provisionTap(name, n, sw)
		if err != nil {
			v.guestLog(name, "failed to create network device: "+err.Error())
			continue
		}
		units = append(units, unit)
		nic.MAC = mac
		nics = append(nics, nic)
		dev := fmt.Sprintf("-s 0:%d:%d,%s,%s", slot, n, emulation, nic.Tap)
		if mac != "" {
			dev += ",mac=" + mac
		}
		devices = append(devices, dev)
	}
	if c.yesno("virt_random", "") {
		devices = append(devices, fmt.Sprintf("-s 0:%d:0,virtio-rnd", slot+1))
	}

	lineage := v.lineage(name)
	fault, _ := v.cfg.EffectiveFault(lineage)
	time.Sleep(time.Duration(fault.LockDelay))

	// vm::lock: only now, after the network, so run.lock implies that uuid
	// and MACs are in NAME.conf.
	_ = os.WriteFile(filepath.Join(dir, "run.lock"), []byte(v.host+"\n"), 0o644)
	v.guestLog(name, "booting")
	// The guest's console: com1 on stdio in the foreground, otherwise a log
	// file of the simulator (a real host would have /dev/nmdm-NAME.1B).
	consoleLog := os.Stdout
	if !foreground {
		if consoleLog, err = os.OpenFile(v.cfg.GuestLog(name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err != nil {
			consoleLog = nil
		}
	}
	diskDir := ""
	if bootdisk != "" {
		diskDir = filepath.Join(dir, bootdisk)
	}
	status := 0
	for runNo := 1; ; runNo++ {
		if v.vmmExists(name) && !uefi {
			// bhyvectl --destroy of a stale vmm, then the script's sleep 1.
			_ = os.Remove(v.cfg.VMMPath(name))
			time.Sleep(time.Second)
		}
		if !uefi {
			loadArgs := fmt.Sprintf("-c /dev/nmdm-%s.1A -m %s -e smbios.system.uuid=%s -e autoboot_delay=%s -e bhyve_vm_name=%s -d %s",
				name, memory, uuid, c.str("loader_timeout", "3"), name, diskPath)
			if foreground {
				loadArgs = strings.Replace(loadArgs, fmt.Sprintf("-c /dev/nmdm-%s.1A ", name), "", 1)
			}
			var rc int
			switch {
			case bootdisk == "":
				v.guestLog(name, "fatal; non-uefi loaders require a boot disk device")
				rc = 15
			case loader != "bhyveload":
				v.guestLog(name, "unsupported loader - '"+loader+"'")
				rc = 15
			default:
				v.guestLog(name, "bhyveload "+loadArgs+" "+name)
				fail, _ := v.failing("_run", name)
				rc = v.runLoader(name, loadArgs, fault, fail, consoleLog)
			}
			if rc != 0 {
				v.guestLog(name, fmt.Sprintf("fatal; loader returned error %d", rc))
				status = rc
				break
			}
		}
		v.guestLog(name,
			" [bhyve options: "+opts+"]",
			" [bhyve devices: "+strings.Join(devices, " ")+"]",
			" [bhyve console: "+strings.Join(comstring, " ")+"]")
		v.guestLog(name, fmt.Sprintf("starting bhyve (run %d)", runNo))
		status = v.runBhyve(name, diskDir, nics, lineage, consoleLog)
		v.guestLog(name, fmt.Sprintf("bhyve exited with status %d", status))
		if v.handleExit(name, c, status) != "restart" {
			break
		}
		v.guestLog(name, "restarting")
	}

	for _, n := range nics {
		v.guestLog(name, "destroying network device "+n.Tap)
		_ = exec.Command(v.cfg.Tools.IP, "-n", v.cfg.NetNS, "link", "del", "dev", n.Tap).Run()
	}
	v.guestLog(name, "stopped")
	_ = os.Remove(v.cfg.VMMPath(name))
	// vm::unlock, unless a knob leaves the lock behind (like a _run that
	// died before unlocking).
	if f, _ := v.cfg.EffectiveFault(lineage); f.RunLock != "" {
		content, _ := f.LockContent(v.host)
		_ = os.WriteFile(filepath.Join(dir, "run.lock"), []byte(content), 0o644)
	} else {
		_ = os.Remove(filepath.Join(dir, "run.lock"))
	}
	_ = os.Remove(filepath.Join(dir, "console"))
	if consoleLog != nil && consoleLog != os.Stdout {
		consoleLog.Close()
	}
	return exitStatus(status)
}

// uefi is vm::uefi: the firmware for the loader flavour must exist, and with
// uefi_vars=yes a per-guest copy of the vars template; otherwise `vm _run`
// logs why and exits 15, before vm::lock, so the guest never leaves Stopped.
func (v *vm) uefi(name, loader string, c conf) (string, error) {
	var bootrom string
	switch loader {
	case "uefi-devel":
		bootrom = filepath.Join(v.cfg.UEFIFirmwareDir(), "BHYVE_UEFI_CODE-devel.fd")
	case "uefi-csm":
		bootrom = filepath.Join(v.cfg.UEFIFirmwareDir(), "BHYVE_UEFI_CSM.fd")
	case "uefi-custom":
		bootrom = filepath.Join(v.cfg.VMDir, ".config", "BHYVE_UEFI.fd")
	default:
		bootrom = filepath.Join(v.cfg.UEFIFirmwareDir(), "BHYVE_UEFI.fd")
	}
	if _, err := os.Stat(bootrom); err != nil {
		v.guestLog(name, "fatal; unable to locate firmware "+bootrom)
		return "", exitStatus(15)
	}
	if c.yesno("uefi_vars", "") {
		vars := filepath.Join(v.cfg.VMPath(name), "uefi-vars.fd")
		if _, err := os.Stat(vars); err != nil {
			tmpl, rerr := os.ReadFile(filepath.Join(v.cfg.UEFIFirmwareDir(), "BHYVE_UEFI_VARS.fd"))
			if rerr != nil {
				v.guestLog(name, "fatal; unable to locate UEFI vars database or template")
				return "", exitStatus(15)
			}
			_ = os.WriteFile(vars, tmpl, 0o644)
		}
		bootrom += "," + vars
	}
	return bootrom, nil
}

// handleExit is vm::handle_exit: 0 (reboot) restarts, 1/2 (poweroff, halt)
// stop unless a restart file is present, anything else follows on_fault.
func (v *vm) handleExit(name string, c conf, code int) string {
	switch code {
	case 0:
		return c.str("on_restart", "restart")
	case 1, 2:
		p := filepath.Join(v.cfg.VMPath(name), "restart")
		if _, err := os.Stat(p); err == nil {
			_ = os.Remove(p)
			return "restart"
		}
		return "shutdown"
	default:
		return c.str("on_fault", "shutdown")
	}
}

// diskPath is vm::get_disk_path.
func (v *vm) diskPath(name, disk, dev string) string {
	switch dev {
	case "zvol", "sparse-zvol":
		return "/dev/zvol/" + v.cfg.DatasetFor(name) + "/" + disk
	case "custom":
		return disk
	default:
		return filepath.Join(v.cfg.VMPath(name), disk)
	}
}

// provisionTap is switch::standard::provision: `ifconfig tap create` (here a
// veth pair in the host's namespace, first free unit number), description
// vmnet/NAME/NUM/SWITCH, then addm to the switch's bridge.
//
// A FreeBSD tap made by `ifconfig tap create` outlives the bhyve that opened
// it: its unit stays taken until vm::run's cleanup runs `ifconfig tapN
// destroy` (lib/vm-run). A veth pair does not: when the guest dies, the
// kernel tears down its network namespace and with the guest end the host
// end, so the unit would look free before this _run's cleanup deletes the
// tap by name, and that delete would take down the tap another guest was
// given meanwhile. The returned file therefore reserves the unit (a flock,
// which the kernel also drops if this _run dies) until the caller has
// deleted the tap and closes it.
func (v *vm) provisionTap(name string, num int, sw string) (guest.NIC, *os.File, error) {
	ip := v.cfg.Tools.IP
	ns := v.cfg.NetNS
	var nic guest.NIC
	var reserved *os.File
	for unit := 0; unit < 10000; unit++ {
		r, err := v.reserveTapUnit(unit)
		if err != nil {
			return nic, nil, err
		}
		if r == nil {
			continue // another _run's tap, alive or not yet destroyed
		}
		tap, peer := simstate.TapName(v.cfg.ID, unit), simstate.PeerName(v.cfg.ID, unit)
		out, err := exec.Command(ip, "-n", ns, "link", "add", tap, "type", "veth", "peer", "name", peer).CombinedOutput()
		if err != nil {
			r.Close()
			if strings.Contains(string(out), "File exists") {
				continue
			}
			return nic, nil, fmt.Errorf("ip link add %s: %w: %s", tap, err, strings.TrimSpace(string(out)))
		}
		nic, reserved = guest.NIC{Num: num, Tap: tap, Peer: peer}, r
		break
	}
	if nic.Tap == "" {
		return nic, nil, errors.New("no free tap unit")
	}
	v.guestLog(name, "initialising network device "+nic.Tap)
	desc := fmt.Sprintf("vmnet/%s/%d/%s", name, num, orDefault(sw, "custom"))
	// Host-side taps carry their own 58:9c:fc:1x:xx:xx (ether_gen_addr).
	var b [3]byte
	_, _ = rand.Read(b[:])
	hostMAC := fmt.Sprintf("58:9c:fc:1%x:%02x:%02x", b[0]&0x0f, b[1], b[2])
	_ = exec.Command(ip, "-n", ns, "link", "set", "dev", nic.Tap, "address", hostMAC, "alias", desc).Run()
	if sw == "" {
		_ = exec.Command(ip, "-n", ns, "link", "set", "dev", nic.Tap, "up").Run()
		return nic, reserved, nil
	}
	bridge := v.switchBridge(sw)
	if bridge == "" {
		v.guestLog(name, fmt.Sprintf("failed to find virtual switch '%s'", sw))
		return nic, reserved, nil
	}
	v.guestLog(name, fmt.Sprintf("adding %s -> %s (%s addm)", nic.Tap, bridge, sw))
	if err := exec.Command(ip, "-n", ns, "link", "set", "dev", nic.Tap, "master", bridge).Run(); err != nil {
		v.guestLog(name, fmt.Sprintf("failed to add %s to %s", nic.Tap, bridge))
	}
	v.guestLog(name, fmt.Sprintf("bring up %s -> %s (%s addm)", nic.Tap, bridge, sw))
	if err := exec.Command(ip, "-n", ns, "link", "set", "dev", nic.Tap, "up").Run(); err != nil {
		v.guestLog(name, fmt.Sprintf("failed to bring up %s in %s", nic.Tap, bridge))
	}
	// `switch::is_private && ifconfig BR private TAP`, errors discarded and
	// not logged. if_bridge's private is Linux's isolated port: isolated
	// ports reach only non-isolated ones (the host's carrier port) and the
	// bridge device itself (the host).
	if v.switchPrivateOn(sw) {
		_ = exec.Command(ip, "-n", ns, "link", "set", "dev", nic.Tap, "type", "bridge_slave", "isolated", "on").Run()
	}
	return nic, reserved, nil
}

// reserveTapUnit takes tap unit n for this _run, or returns nil when
// another _run holds it.
func (v *vm) reserveTapUnit(n int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(v.cfg.RunDir(), fmt.Sprintf("tap%d.unit", n)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("reserve tap unit %d: %w", n, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("reserve tap unit %d: %w", n, err)
	}
	return f, nil
}

// switchBridge is switch::id: a manual switch names its bridge in
// system.conf, a standard one is vm-SWITCH.
func (v *vm) switchBridge(sw string) string {
	core := v.coreConf()
	known := false
	for _, s := range strings.Fields(core.str("switch_list", "")) {
		if s == sw {
			known = true
		}
	}
	if !known {
		return ""
	}
	switch core.str("type_"+sw, "standard") {
	case "manual":
		return core.str("bridge_"+sw, "")
	case "standard":
		return "vm-" + sw
	}
	return ""
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// runLoader runs the bhyveload stand-in; its argv ends with NAME so that
// vm::running_check reports "Bootloader (pid)".
func (v *vm) runLoader(name, loadArgs string, f simstate.Fault, fail bool, console *os.File) int {
	delay := f.LoaderDelay
	if delay == 0 {
		delay = guest.DefaultLoaderDelay
	}
	env, err := guest.Env(guest.RoleBhyveload, guest.LoaderParams{Root: v.cfg.Root, Name: name, Delay: delay, Fail: fail})
	if err != nil {
		return 1
	}
	cmd := &exec.Cmd{
		Path: v.cfg.Binary,
		Args: append(append([]string{"bhyveload"}, strings.Fields(loadArgs)...), name),
		Env:  append(v.baseEnv(), env...),
	}
	if console != nil {
		cmd.Stdout, cmd.Stderr = console, console
	}
	return exitCode(cmd.Run())
}

// runBhyve runs "bhyve: NAME" and waits for it.
func (v *vm) runBhyve(name, diskDir string, nics []guest.NIC, lineage []string, console *os.File) int {
	env, err := guest.Env(guest.RoleBhyve, guest.BhyveParams{
		Root: v.cfg.Root, Name: name, DiskDir: diskDir, NICs: nics, Lineage: lineage,
	})
	if err != nil {
		return 4
	}
	cmd := &exec.Cmd{
		Path: v.cfg.Binary,
		Args: []string{"bhyve: " + name},
		Env:  append(v.baseEnv(), env...),
	}
	if console != nil {
		cmd.Stdout, cmd.Stderr = console, console
	}
	return exitCode(cmd.Run())
}

// baseEnv is the environment of guest processes: ours with the marker.
func (v *vm) baseEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, simstate.RoleEnv+"=") || strings.HasPrefix(e, simstate.ParamsEnv+"=") ||
			strings.HasPrefix(e, simstate.MarkerEnv+"=") {
			continue
		}
		env = append(env, e)
	}
	return append(env, v.cfg.Marker())
}

// exitCode is $? after a command: 128+N for a signal.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 127
}
