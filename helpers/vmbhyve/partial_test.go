package vmbhyve

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPartialClonesAndTheirRemoval(t *testing.T) {
	var d *Driver
	d, fake := newDriver(t, func(argv []string) fakeResult {
		if argv[0] == "/sbin/zfs" && argv[1] == "list" {
			name := filepath.Base(argv[len(argv)-1])
			if name == "ci-plain" {
				return fakeResult{stdout: "zroot/vm\t" + d.VMDir + "\n"}
			}
			return fakeResult{stdout: "zroot/vm/" + name + "\t" + filepath.Join(d.VMDir, name) + "\n"}
		}
		return fakeResult{}
	})
	mk := func(name string, files ...string) {
		require.NoError(t, os.MkdirAll(filepath.Join(d.VMDir, name), 0o755))
		for _, f := range files {
			require.NoError(t, os.WriteFile(filepath.Join(d.VMDir, name, f), nil, 0o644))
		}
	}
	mk("ci-partial-1-0", "tmpl.conf") // zfs::clone's state before the rename
	mk("ci-plain")
	mk("ci-vm-2-0", "ci-vm-2-0.conf")
	mk("web-partial", "tmpl.conf")
	mk(".templates")

	_, err := d.PartialClones("")
	require.Error(t, err, "an empty prefix would match everything")
	got, err := d.PartialClones("ci-")
	require.NoError(t, err)
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"ci-partial-1-0", "ci-plain"}, names)

	require.NoError(t, d.DestroyPartialClone(context.Background(), "ci-partial-1-0"))
	err = d.DestroyPartialClone(context.Background(), "ci-plain")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not a ZFS dataset of its own")
	err = d.DestroyPartialClone(context.Background(), "ci-vm-2-0")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "it is a VM now")

	var calls []string
	for _, argv := range fake.Calls() {
		calls = append(calls, strings.Join(argv, " "))
	}
	assert.Equal(t, []string{
		"/sbin/zfs list -H -o name,mountpoint " + filepath.Join(d.VMDir, "ci-partial-1-0"),
		"sudo -n /sbin/zfs destroy -r zroot/vm/ci-partial-1-0",
		"/sbin/zfs list -H -o name,mountpoint " + filepath.Join(d.VMDir, "ci-plain"),
	}, calls, "list without privilege, destroy only through it, never the datastore")
}
