package vmbhyve

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withSnapshots makes VMDIR/name/.zfs/snapshot/SNAP for each snap, where
// ZFS shows a dataset's snapshots.
func withSnapshots(t *testing.T, d *Driver, name string, snaps ...string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(d.VMDir, name, ".zfs", "snapshot"), 0o755))
	for _, s := range snaps {
		require.NoError(t, os.MkdirAll(d.snapshotDir(name, s), 0o755))
	}
}

func TestBuildSnapshotNameSortsByTime(t *testing.T) {
	a := BuildSnapshotName(time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC))
	b := BuildSnapshotName(time.Date(2027, 1, 1, 0, 0, 0, 0, time.FixedZone("CET", 3600))) // 2026-12-31 23:00 UTC
	c := BuildSnapshotName(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	assert.Equal(t, "build-20261231-235959", a)
	assert.Equal(t, "build-20261231-230000", b, "named in UTC")
	assert.Less(t, b, a)
	assert.Less(t, a, c)
	assert.NoError(t, validSnapshot(a), "a valid vm-bhyve snapshot name")
}

func TestResolveSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vmExists bool
		snaps    []string
		setting  string
		want     string
		wantErr  error
	}{
		{name: "latest is the newest build", vmExists: true, snaps: []string{"build-20260101-000000", "build-20261201-093000", "build-20260601-120000"}, setting: "latest", want: "build-20261201-093000"},
		{name: "other snapshots are not builds", vmExists: true, snaps: []string{"build-20260101-000000", "zz-manual", "build-2027", "build-20270101-000000-x", "latest"}, setting: "latest", want: "build-20260101-000000"},
		{name: "a named snapshot is itself", vmExists: true, snaps: []string{"build-20260101-000000"}, setting: "base", want: "base"},
		{name: "no build snapshot", vmExists: true, snaps: []string{"base"}, setting: "latest", wantErr: ErrNotFound},
		{name: "no snapshot at all", vmExists: true, setting: "latest", wantErr: ErrNotFound},
		{name: "no such template", setting: "latest", wantErr: ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newDriver(t, script(t, nil))
			if tc.vmExists {
				withSnapshots(t, d, "tmpl", tc.snaps...)
			}
			got, err := d.ResolveSnapshot("tmpl", tc.setting)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				assert.Contains(t, err.Error(), `snapshot "latest" of tmpl`)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Empty(t, fake.Calls(), "resolving reads the dataset's .zfs directory; it runs nothing")
		})
	}
}

func TestSnapshotIsCheckedAfterwards(t *testing.T) {
	d, fake := newDriver(t, nil)
	withSnapshots(t, d, "tmpl")
	fake.handle = func(argv []string) fakeResult {
		// The real command makes the snapshot; this one only for "good".
		if argv[len(argv)-1] == "tmpl@good" {
			require.NoError(t, os.MkdirAll(d.snapshotDir("tmpl", "good"), 0o755))
		}
		return fakeResult{}
	}
	require.NoError(t, d.Snapshot(context.Background(), "tmpl", "good"))
	err := d.Snapshot(context.Background(), "tmpl", "lost")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "vm snapshot succeeded but")
	assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "snapshot", "tmpl@good"}, {"sudo", "-n", vmPath, "snapshot", "tmpl@lost"}}, fake.Calls())
	assert.Error(t, d.Snapshot(context.Background(), "tmpl", "bad name"), "refused before running anything")
	assert.Len(t, fake.Calls(), 2)
}

func TestDestroySnapshot(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    fakeResult
		dependent bool
		ok        bool
	}{
		{name: "destroyed", answer: fakeResult{}, ok: true},
		// zfs destroy (zfs_main.c) via zfs::remove_snapshot's util::err.
		{name: "clones depend on it", answer: fakeResult{stderr: "cannot destroy 'zroot/vm/tmpl@build-20260101-000000': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\nzroot/vm/ci-r-1-0\n" + vmPath + ": ERROR: failed to remove snapshot zroot/vm/tmpl@build-20260101-000000\n", code: 1}, dependent: true},
		{name: "other failure", answer: vmErr("failed to remove snapshot zroot/vm/tmpl@build-20260101-000000"), dependent: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newDriver(t, script(t, map[string][]fakeResult{"destroy": {tc.answer}}))
			err := d.DestroySnapshot(context.Background(), "tmpl", "build-20260101-000000")
			assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "destroy", "tmpl@build-20260101-000000"}}, fake.Calls(), "never -f, never -R")
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.dependent, errors.Is(err, ErrDependentClones))
		})
	}
}

// TestRollbackVerifiesTheResult: zfs::rollback's exit status is 0 even
// when zfs refused, so Rollback decides from the snapshots left.
func TestRollbackVerifiesTheResult(t *testing.T) {
	const (
		old    = "build-20260101-000000"
		mid    = "build-20260201-000000"
		newest = "build-20260301-000000"
	)
	refusal := "cannot rollback to 'zroot/vm/tmpl@" + old + "': clones of previous snapshots exist\nuse '-R' to force deletion of the following clones and dependents:\nzroot/vm/ci-r-1-0\n"
	for _, tc := range []struct {
		name    string
		to      string
		removes []string // what the command really destroyed
		answer  fakeResult
		wantErr string
	}{
		{name: "rolled back", to: old, removes: []string{mid, newest}},
		{name: "exit 0 but zfs refused", to: old, answer: fakeResult{stderr: refusal}, wantErr: "vm rollback exited 0 but did not roll back (newer snapshots still there: [" + mid + " " + newest + "]); zfs said: \"" + refusal[:40]},
		{name: "exit 0, half done", to: old, removes: []string{newest}, wantErr: "newer snapshots still there: [" + mid + "]"},
		{name: "the target vanished", to: mid, removes: []string{mid, newest}, wantErr: "did not roll back"},
		{name: "unknown snapshot", to: "build-20250101-000000", wantErr: "did not roll back"},
		{name: "exit status 1", to: old, answer: vmErr("tmpl does not appear to be an existing virtual machine"), wantErr: "does not appear to be an existing virtual machine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, fake := newDriver(t, nil)
			withSnapshots(t, d, "tmpl", old, mid, newest)
			fake.handle = func([]string) fakeResult {
				for _, s := range tc.removes {
					require.NoError(t, os.RemoveAll(d.snapshotDir("tmpl", s)))
				}
				return tc.answer
			}
			err := d.Rollback(context.Background(), "tmpl", tc.to)
			assert.Equal(t, [][]string{{"sudo", "-n", vmPath, "rollback", "-r", "tmpl@" + tc.to}}, fake.Calls())
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestCreateArgs(t *testing.T) {
	assert.Equal(t, []string{"create", "-t", "default", "-s", "20G", "-m", "2G", "-c", "2", "-i", "/img/fb.img", "-C", "-k", "/tmp/k.pub", "fbsd"},
		CreateArgs("fbsd", CreateOptions{Profile: "default", Size: "20G", Memory: "2G", CPUs: "2", Image: "/img/fb.img", PublicKeyFile: "/tmp/k.pub"}))
	assert.Equal(t, []string{"create", "fbsd"}, CreateArgs("fbsd", CreateOptions{}), "vm-bhyve's defaults for what is not given")
}
