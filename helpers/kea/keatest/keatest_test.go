package keatest_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea"
	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/kea/keatest"
)

func TestWriteFileIsReadBack(t *testing.T) {
	mac, err := net.ParseMAC("58:9c:fc:04:2e:9b")
	require.NoError(t, err)
	now := time.Unix(1700000000, 0)
	for _, v := range []keatest.Version{keatest.V22, keatest.V24, keatest.VMin} {
		t.Run(keatest.Header(v), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kea-leases4.csv")
			f, err := os.Create(path)
			require.NoError(t, err)
			info, err := keatest.WriteFile(f, keatest.Options{Version: v, Rows: 5000, MAC: mac, MACRows: []int{10, 2000, 4990}, Now: now, Seed: 7})
			require.NoError(t, err)
			require.NoError(t, f.Close())

			st, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, st.Size(), info.Bytes)
			assert.Equal(t, 4992, info.Line) // header, then 0-based row 4990

			l, err := kea.NewReader(path).Lookup(context.Background(), mac, now)
			require.NoError(t, err)
			assert.Equal(t, info.Address, l.Address)
			assert.Equal(t, info.Line, l.Line)
			assert.Equal(t, info.Expire, l.Expire)
		})
	}
}

func TestWriteFileRejectsMACRowsOutOfOrder(t *testing.T) {
	mac, err := net.ParseMAC("58:9c:fc:04:2e:9b")
	require.NoError(t, err)
	_, err = keatest.WriteFile(new(nopWriter), keatest.Options{Rows: 10, MAC: mac, MACRows: []int{5, 3}})
	require.Error(t, err)
}

type nopWriter struct{}

func (*nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestAppendRowEscapes(t *testing.T) {
	b := keatest.AppendRow(nil, keatest.V24, keatest.Row{
		Address: netipMust("10.0.0.1"), ValidLifetime: 1, Expire: 2, SubnetID: 3, FQDNFwd: true,
		Hostname: "a,b&c\n", State: 1, UserContext: `{"k":"v,w"}`, PoolID: 4,
	})
	assert.Equal(t, "10.0.0.1,,,1,2,3,1,0,a&#x2cb&#x26c&#x0a,1,{\"k\":\"v&#x2cw\"},4\n", string(b))
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
