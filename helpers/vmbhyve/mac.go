package vmbhyve

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
)

// ErrMACSpaceExhausted: every address in vm-bhyve's range is in use.
var ErrMACSpaceExhausted = errors.New("no free MAC address left in 58:9c:fc:00:00:01-58:9c:fc:0f:ff:ff")

// vm::generate_static_mac (lib/vm-run) draws guest MACs from
// 58:9c:fc:0X:XX:XX, FreeBSD's bhyve OUI slice below the 58:9c:fc:10:… that
// ifconfig gives host-side taps: 20 random bits, 0 excluded (sys/net/
// ieee_oui.h), lower case, and no uniqueness check at all. Picking the MAC
// ourselves and writing it before `vm start` keeps the guest in that range
// (so anything filtering on it keeps working) while making collisions
// impossible within this host's default datastore.
var macOUI = [3]byte{0x58, 0x9c, 0xfc}

const macBits = 20

// macAttempts random draws before falling back to a linear search; with the
// space even 99% full, 64 draws miss only with probability 0.99^64 ≈ 0.5.
const macAttempts = 64

var macKey = regexp.MustCompile(`^network[0-9]+_mac$`)

// AllocateMAC picks a random guest MAC in vm-bhyve's range that no
// VMDir/*/*.conf uses as networkN_mac and that this Driver has not handed
// out and still holds. The returned release func ends that in-process
// reservation: call it once the MAC is written into the guest's conf (from
// then on the scan sees it) or abandoned. It is safe to call more than once.
func (d *Driver) AllocateMAC(ctx context.Context) (net.HardwareAddr, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("allocate MAC: %w", err)
	}
	used, err := d.usedMACs()
	if err != nil {
		return nil, nil, fmt.Errorf("allocate MAC: %w", err)
	}

	d.macMu.Lock()
	defer d.macMu.Unlock()
	if d.reserved == nil {
		d.reserved = map[uint32]struct{}{}
	}
	bits := d.macBits
	if bits == 0 {
		bits = macBits
	}
	size := uint32(1) << bits
	taken := func(v uint32) bool {
		if v == 0 {
			return true
		}
		_, u := used[v]
		_, r := d.reserved[v]
		return u || r
	}

	free := size - 1 // 0 is never used
	for v := range used {
		if _, r := d.reserved[v]; !r && v != 0 && v < size {
			free--
		}
	}
	for v := range d.reserved {
		if v != 0 && v < size {
			free--
		}
	}
	if free == 0 {
		return nil, nil, fmt.Errorf("allocate MAC: %w", ErrMACSpaceExhausted)
	}

	random := d.random
	if random == nil {
		random = rand.Reader
	}
	draw := func() (uint32, error) {
		var b [4]byte
		if _, err := io.ReadFull(random, b[:]); err != nil {
			return 0, fmt.Errorf("allocate MAC: random source: %w", err)
		}
		return (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) & (size - 1), nil
	}

	v, err := draw()
	if err != nil {
		return nil, nil, err
	}
	for i := 1; taken(v) && i < macAttempts; i++ {
		if v, err = draw(); err != nil {
			return nil, nil, err
		}
	}
	// A nearly full space: walk on from the last draw to the next free one,
	// which exists because free > 0.
	for taken(v) {
		v = (v + 1) & (size - 1)
	}

	d.reserved[v] = struct{}{}
	var once sync.Once
	release := func() {
		once.Do(func() {
			d.macMu.Lock()
			delete(d.reserved, v)
			d.macMu.Unlock()
		})
	}
	return macFromInt(v), release, nil
}

func macFromInt(v uint32) net.HardwareAddr {
	return net.HardwareAddr{macOUI[0], macOUI[1], macOUI[2], byte(v >> 16), byte(v >> 8), byte(v)}
}

// usedMACs collects the networkN_mac values of every VMDir/*/*.conf that fall
// in vm-bhyve's range, as offsets into it. Unparsable values are skipped:
// vm-bhyve would hand them to bhyve, not to us.
func (d *Driver) usedMACs() (map[uint32]struct{}, error) {
	if d.VMDir == "" {
		return nil, errors.New("VMDir is not configured")
	}
	if _, err := os.Stat(d.VMDir); err != nil {
		return nil, fmt.Errorf("VMDir: %w", err)
	}
	paths, err := filepath.Glob(filepath.Join(d.VMDir, "*", "*.conf"))
	if err != nil {
		return nil, err
	}
	used := map[uint32]struct{}{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // destroyed while we looked
		}
		if err != nil {
			// An unreadable conf could hide a MAC in use; guessing would
			// risk the very collision this exists to prevent.
			return nil, fmt.Errorf("scan MACs in use: %w", err)
		}
		// Every line counts, not only the first one vm-bhyve reads: a
		// duplicate costs one address, a miss could cost a collision.
		eachConfLine(data, func(key, value string) {
			if !macKey.MatchString(key) {
				return
			}
			hw, err := net.ParseMAC(value)
			if err != nil || len(hw) != 6 || hw[0] != macOUI[0] || hw[1] != macOUI[1] || hw[2] != macOUI[2] || hw[3] > 0x0f {
				return
			}
			used[uint32(hw[3])<<16|uint32(hw[4])<<8|uint32(hw[5])] = struct{}{}
		})
	}
	return used, nil
}
