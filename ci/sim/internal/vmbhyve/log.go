package vmbhyve

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// guestLog is util::log "guest": one "DATE: message" line per message in
// NAME/vm-bhyve.log. 1.6 stamps with `date +'%b %d %T'`, 1.7+ with
// `date -Iseconds`.
func (v *vm) guestLog(name string, msgs ...string) {
	f, err := os.OpenFile(filepath.Join(v.cfg.VMPath(name), "vm-bhyve.log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	for _, m := range msgs {
		fmt.Fprintf(f, "%s: %s\n", v.logStamp(), m)
	}
}

func (v *vm) logStamp() string {
	t := v.now()
	if v.cfg.VersionAtLeast17() {
		return t.Format("2006-01-02T15:04:05-07:00")
	}
	return t.Format("Jan 02 15:04:05")
}

// logRotate is util::log_rotate: at 1 MiB the log moves to vm-bhyve.log.0
// (the real one also gzips it; the simulator keeps it plain).
func (v *vm) logRotate(name string) {
	p := filepath.Join(v.cfg.VMPath(name), "vm-bhyve.log")
	if st, err := os.Stat(p); err == nil && st.Size() >= 1<<20 {
		_ = os.Rename(p, p+".0")
	}
}

// generateMAC is vm::generate_static_mac: 58:9c:fc:0X:XX:XX. Up to 1.7.0 the
// last 20 bits come from md5("NAME:NUM:EPOCH:i"), so two guests of the same
// name made in the same second collide; 1.7.1+ uses `openssl rand -hex 3`
// with the first nibble forced to 0.
func (v *vm) generateMAC(name string, num int) (mac, logMsg string) {
	if v.cfg.VersionAtLeast17() {
		for {
			var b [3]byte
			_, _ = rand.Read(b[:])
			b[0] &= 0x0f
			part := fmt.Sprintf("%02x:%02x:%02x", b[0], b[1], b[2])
			if part != "00:00:00" {
				mac = "58:9c:fc:" + part
				return mac, "generated static mac " + mac
			}
		}
	}
	base := name + ":" + strconv.Itoa(num) + ":" + strconv.FormatInt(v.now().Unix(), 10)
	for i := 0; ; i++ {
		key := base + ":" + strconv.Itoa(i)
		sum := md5.Sum([]byte(key))
		h := hex.EncodeToString(sum[:])
		part := h[0:1] + ":" + h[1:3] + ":" + h[3:5]
		if part != "0:00:00" {
			mac = "58:9c:fc:0" + part
			return mac, fmt.Sprintf("generated static mac %s (based on '%s')", mac, key)
		}
	}
}

// uuidgen prints a random (version 4) UUID in lowercase like FreeBSD's.
func uuidgen() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
