package zfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCloneAndDestroyRules(t *testing.T) {
	dir := t.TempDir()
	st := Open(filepath.Join(dir, "meta"))
	vm := filepath.Join(dir, "vm")
	mp := func(n string) string { return filepath.Join(vm, n) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Update(func(db *DB) error { return db.Create("zroot/vm/tmpl", mp("tmpl")) }))
	must(os.WriteFile(filepath.Join(mp("tmpl"), "tmpl.conf"), []byte("cpu=2\n"), 0o644))
	must(st.Update(func(db *DB) error { return db.SnapshotRecursive("zroot/vm/tmpl", "base") }))
	// Files written after the snapshot are not in it.
	must(os.WriteFile(filepath.Join(mp("tmpl"), "later"), nil, 0o644))
	must(st.Update(func(db *DB) error { return db.Clone("zroot/vm/tmpl", "base", "zroot/vm/c1", mp("c1")) }))

	if _, err := os.Stat(filepath.Join(mp("c1"), "tmpl.conf")); err != nil {
		t.Errorf("clone lacks the snapshot's file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mp("c1"), "later")); err == nil {
		t.Error("clone has a file written after the snapshot")
	}
	if _, err := os.Stat(filepath.Join(mp("c1"), ".zfs")); err == nil {
		t.Error("clone copied the snapdir")
	}

	var ze *Error
	err := st.Update(func(db *DB) error { return db.Clone("zroot/vm/tmpl", "base", "zroot/vm/c1", mp("c1")) })
	if !errors.As(err, &ze) || ze.Msg != "cannot create 'zroot/vm/c1': dataset already exists" {
		t.Errorf("clone onto existing: %v", err)
	}
	err = st.Update(func(db *DB) error { return db.DestroyRecursive("zroot/vm/tmpl") })
	if !errors.As(err, &ze) || ze.Msg != "cannot destroy 'zroot/vm/tmpl': filesystem has dependent clones\n"+
		"use '-R' to destroy the following datasets:\nzroot/vm/c1" {
		t.Errorf("destroy with dependents: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mp("tmpl"), "tmpl.conf")); err != nil {
		t.Error("refused destroy removed files")
	}
	must(st.Update(func(db *DB) error { return db.DestroyRecursive("zroot/vm/c1") }))
	must(st.View(func(db *DB) error {
		if !db.SnapshotExists("zroot/vm/tmpl", "base") {
			t.Error("destroying the clone removed its origin snapshot")
		}
		return nil
	}))
	must(st.Update(func(db *DB) error { return db.DestroyRecursive("zroot/vm/tmpl") }))
	if _, err := os.Stat(mp("tmpl")); err == nil {
		t.Error("destroyed dataset left its files")
	}
}
