package zfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestMainListAndDestroy(t *testing.T) {
	dir := t.TempDir()
	st := Open(filepath.Join(dir, "meta"))
	vm := filepath.Join(dir, "vm")
	if err := st.Update(func(db *DB) error {
		if err := db.Create("zroot/vm", vm); err != nil {
			return err
		}
		if err := db.Create("zroot/vm/tmpl", filepath.Join(vm, "tmpl")); err != nil {
			return err
		}
		if err := db.SnapshotRecursive("zroot/vm/tmpl", "base"); err != nil {
			return err
		}
		return db.Clone("zroot/vm/tmpl", "base", "zroot/vm/c1", filepath.Join(vm, "c1"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(vm, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		rc := Main(st, args, &out, &errb)
		return rc, out.String(), errb.String()
	}
	tests := []struct {
		args         []string
		rc           int
		stdout, errs string
	}{
		{[]string{"list", "-H", "-o", "name,mountpoint", filepath.Join(vm, "c1")}, 0, "zroot/vm/c1\t" + filepath.Join(vm, "c1") + "\n", ""},
		// A plain directory resolves to the dataset that contains it.
		{[]string{"list", "-H", "-o", "name,mountpoint", filepath.Join(vm, "plain")}, 0, "zroot/vm\t" + vm + "\n", ""},
		{[]string{"list", "-H", "-o", "name,mountpoint", "zroot/vm/nope"}, 1, "", "cannot open 'zroot/vm/nope': dataset does not exist\n"},
		{[]string{"list", "-H", "-o", "name,mountpoint", filepath.Join(vm, "nope")}, 1, "", "cannot open '" + filepath.Join(vm, "nope") + "': No such file or directory\n"},
		{[]string{"destroy", "-r", "zroot/vm/tmpl"}, 1, "", "cannot destroy 'zroot/vm/tmpl': filesystem has dependent clones\nuse '-R' to destroy the following datasets:\nzroot/vm/c1\n"},
		{[]string{"destroy", "-r", "zroot/vm/c1"}, 0, "", ""},
		{[]string{"destroy", "-r", "zroot/vm/c1"}, 1, "", "cannot open 'zroot/vm/c1': dataset does not exist\n"},
		{[]string{"destroy", "-r", "zroot/vm/tmpl"}, 0, "", ""},
		{[]string{"destroy", "zroot/vm"}, 2, "", "bhyve-sim zfs: only 'destroy -r DATASET' is simulated\n"},
	}
	for _, tt := range tests {
		rc, out, errs := run(tt.args...)
		if rc != tt.rc || out != tt.stdout || errs != tt.errs {
			t.Errorf("zfs %q = %d, %q, %q; want %d, %q, %q", tt.args, rc, out, errs, tt.rc, tt.stdout, tt.errs)
		}
	}
	if _, err := os.Stat(filepath.Join(vm, "c1")); !os.IsNotExist(err) {
		t.Errorf("c1's mountpoint is still there: %v", err)
	}
}
