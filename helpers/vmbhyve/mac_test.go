package vmbhyve

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// draws encodes the 4-byte random draws AllocateMAC consumes.
func draws(vals ...uint32) *bytes.Reader {
	var b []byte
	for _, v := range vals {
		b = append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return bytes.NewReader(b)
}

func TestAllocateMACFormat(t *testing.T) {
	d, _ := newDriver(t, script(t, nil))
	seen := map[string]bool{}
	for range 200 {
		mac, release, err := d.AllocateMAC(context.Background())
		require.NoError(t, err)
		defer release()
		s := mac.String()
		assert.Regexp(t, `^58:9c:fc:0[0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$`, s)
		assert.NotEqual(t, "58:9c:fc:00:00:00", s)
		assert.False(t, seen[s], "handed out twice: %s", s)
		seen[s] = true
	}
}

func TestAllocateMACAvoidsConfs(t *testing.T) {
	d, _ := newDriver(t, script(t, nil))
	d.macBits = 2 // offsets 1, 2, 3
	writeConf(t, d.VMDir, "ci-1", "network0_mac=\"58:9c:fc:00:00:01\"\n")
	writeConf(t, d.VMDir, "ci-2", "network0_type=\"virtio-net\"\nnetwork1_mac=\"58:9C:FC:00:00:03\"\n") // upper case still counts
	writeConf(t, d.VMDir, "tmpl", "network0_mac=\"02:00:00:00:00:02\"\n")                               // another range: irrelevant
	// Draws hit 1 and 3 (taken) before 2.
	d.random = draws(1, 3, 1, 2)
	mac, release, err := d.AllocateMAC(context.Background())
	require.NoError(t, err)
	defer release()
	assert.Equal(t, "58:9c:fc:00:00:02", mac.String())
}

func TestAllocateMACCountsEveryConfLine(t *testing.T) {
	d, _ := newDriver(t, script(t, nil))
	d.macBits = 2
	// vm-bhyve reads only the first network0_mac, but both are treated as
	// used so a later edit can never produce a duplicate.
	writeConf(t, d.VMDir, "ci-1", "network0_mac=\"58:9c:fc:00:00:01\"\nnetwork0_mac=\"58:9c:fc:00:00:02\"\n")
	mac, release, err := d.AllocateMAC(context.Background())
	require.NoError(t, err)
	defer release()
	assert.Equal(t, "58:9c:fc:00:00:03", mac.String())
}

func TestAllocateMACReservationsAndExhaustion(t *testing.T) {
	d, _ := newDriver(t, script(t, nil))
	d.macBits = 3 // offsets 1..7
	writeConf(t, d.VMDir, "ci-1", "network0_mac=\"58:9c:fc:00:00:05\"\n")

	var releases []func()
	var macs []string
	for range 6 {
		mac, release, err := d.AllocateMAC(context.Background())
		require.NoError(t, err)
		assert.NotEqual(t, "58:9c:fc:00:00:05", mac.String())
		assert.NotContains(t, macs, mac.String(), "reserved twice")
		macs = append(macs, mac.String())
		releases = append(releases, release)
	}
	_, _, err := d.AllocateMAC(context.Background())
	assert.ErrorIs(t, err, ErrMACSpaceExhausted)

	// Releasing an abandoned reservation frees exactly that address.
	releases[2]()
	releases[2]() // idempotent
	mac, release, err := d.AllocateMAC(context.Background())
	require.NoError(t, err)
	defer release()
	assert.Equal(t, macs[2], mac.String())
	_, _, err = d.AllocateMAC(context.Background())
	assert.ErrorIs(t, err, ErrMACSpaceExhausted)
}

func TestAllocateMACWrittenThenReleased(t *testing.T) {
	// The intended sequence: allocate, write into the clone's conf, release.
	// The address stays taken because the scan now finds it.
	d, _ := newDriver(t, sysrcFake(t))
	d.macBits = 1 // a single usable address
	writeConf(t, d.VMDir, "ci-1", "cpu=2\n")
	mac, release, err := d.AllocateMAC(context.Background())
	require.NoError(t, err)
	require.NoError(t, d.SetConf(context.Background(), "ci-1", "network0_mac="+mac.String()))
	release()
	_, _, err = d.AllocateMAC(context.Background())
	assert.ErrorIs(t, err, ErrMACSpaceExhausted)
}

func TestAllocateMACConcurrent(t *testing.T) {
	d, _ := newDriver(t, script(t, nil))
	d.macBits = 6 // 63 addresses for 63 callers: every one must get its own
	var mu sync.Mutex
	got := map[string]bool{}
	var wg sync.WaitGroup
	for range 63 {
		wg.Go(func() {
			mac, _, err := d.AllocateMAC(context.Background())
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			assert.False(t, got[mac.String()], "duplicate %s", mac)
			got[mac.String()] = true
		})
	}
	wg.Wait()
	assert.Len(t, got, 63)
}

func TestAllocateMACErrors(t *testing.T) {
	d, _ := newDriver(t, script(t, nil))
	d.VMDir = filepath.Join(t.TempDir(), "missing")
	_, _, err := d.AllocateMAC(context.Background())
	assert.Error(t, err, "without VMDir the MACs in use are unknown")

	d, _ = newDriver(t, script(t, nil))
	// A conf that cannot be read might hide a MAC in use: refuse rather
	// than guess. (A directory named like a conf fails even for root.)
	require.NoError(t, os.MkdirAll(filepath.Join(d.VMDir, "odd", "odd.conf"), 0o755))
	_, _, err = d.AllocateMAC(context.Background())
	assert.ErrorContains(t, err, "scan MACs in use")
	require.NoError(t, os.Remove(filepath.Join(d.VMDir, "odd", "odd.conf")))

	d.random = bytes.NewReader(nil)
	_, _, err = d.AllocateMAC(context.Background())
	assert.ErrorContains(t, err, "random source")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = d.AllocateMAC(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}
