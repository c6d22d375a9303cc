package sysrc

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSysrc(t *testing.T) {
	for _, tc := range []struct {
		name       string
		file       string // initial content ("-" for no file)
		args       []string
		stdout     string
		stderr     string
		code       int
		wantFile   string
		skipFileEq bool
	}{
		{name: "append new key to file without final newline", file: `cpu=2`,
			args: []string{"network0_mac=58:9c:fc:01:02:03"}, stdout: "network0_mac:  -> 58:9c:fc:01:02:03\n",
			wantFile: "cpu=2\nnetwork0_mac=\"58:9c:fc:01:02:03\"\n"},
		{name: "several assignments", file: "cpu=2\n",
			args:     []string{"a=1", "b=two words"},
			stdout:   "a:  -> 1\nb:  -> two words\n",
			wantFile: "cpu=2\na=\"1\"\nb=\"two words\"\n"},
		{name: "replace in place keeping order", file: "a=\"1\"\nb=\"2\"\nc=\"3\"\n",
			args: []string{"b=20"}, stdout: "b: 2 -> 20\n", wantFile: "a=\"1\"\nb=\"20\"\nc=\"3\"\n"},
		{name: "unquoted value with comment", file: "memory=1G # small\n",
			args: []string{"memory=2G"}, stdout: "memory: 1G -> 2G\n", wantFile: "memory=\"2G\" # small\n"},
		{name: "single quotes kept", file: "x='old'\n",
			args: []string{"x=new"}, stdout: "x: old -> new\n", wantFile: "x='new'\n"},
		{name: "last of duplicates replaced", file: "k=\"a\"\nk=\"b\"\n",
			args: []string{"k=c"}, stdout: "k: b -> c\n", wantFile: "k=\"a\"\nk=\"c\"\n"},
		{name: "expansion left alone, new line appended", file: "k=$OTHER\n",
			args: []string{"k=v"}, stdout: "k:  -> v\n", wantFile: "k=$OTHER\nk=\"v\"\n"},
		{name: "create missing file", file: "-",
			args: []string{"k=v"}, stdout: "k:  -> v\n", wantFile: "k=\"v\"\n"},
		{name: "get", file: "k=\"v w\"\n", args: []string{"k"}, stdout: "k: v w\n", wantFile: "k=\"v w\"\n"},
		{name: "get -n", file: "k=\"v\"\n", args: []string{"-n", "k"}, stdout: "v\n", wantFile: "k=\"v\"\n"},
		{name: "get -e", file: "k=v\n", args: []string{"-e", "k"}, stdout: "k=\"v\"\n", wantFile: "k=v\n"},
		{name: "get unknown", file: "k=v\n", args: []string{"-n", "nope"}, code: 1,
			stderr: "sysrc: unknown variable 'nope'\n", wantFile: "k=v\n"},
		{name: "delete all assignments", file: "a=1\nk=\"x\"\nb=2\nk=\"y\"\n", args: []string{"-x", "k"},
			wantFile: "a=1\nb=2\n"},
		{name: "delete unknown", file: "a=1\n", args: []string{"-x", "k"}, code: 1,
			stderr: "sysrc: unknown variable 'k'\n", wantFile: "a=1\n"},
		{name: "delete unknown ignored still fails", file: "a=1\n", args: []string{"-ix", "k"}, code: 1,
			wantFile: "a=1\n"},
		{name: "append to list", file: "vm_list=\"a b\"\n", args: []string{"vm_list+=c"},
			stdout: "vm_list: a b -> a b c\n", wantFile: "vm_list=\"a b c\"\n"},
		{name: "remove from list", file: "vm_list=\"a b c\"\n", args: []string{"vm_list-=b"},
			stdout: "vm_list: a b c -> a c\n", wantFile: "vm_list=\"a c\"\n"},
		{name: "bad name", file: "a=1\n", args: []string{"bad.name=1"}, code: 1,
			stderr: "sysrc: bad.name: name contains characters not allowed in shell\n", wantFile: "a=1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "NAME.conf")
			if tc.file != "-" {
				if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out, errb bytes.Buffer
			code := Main("/usr/sbin/sysrc", append([]string{"-f", path}, tc.args...), &out, &errb, nil)
			if code != tc.code || out.String() != tc.stdout || errb.String() != tc.stderr {
				t.Errorf("got exit %d stdout %q stderr %q\nwant exit %d stdout %q stderr %q",
					code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderr)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tc.wantFile {
				t.Errorf("file:\n%s\nwant:\n%s", got, tc.wantFile)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main("/usr/sbin/sysrc", nil, &out, &errb, nil); code != 1 || out.Len() != 0 ||
		errb.String() != "Usage: sysrc [OPTIONS] {name[[+|-]=value] ... | -a | -A | -l | -L [name ...]}\nTry `sysrc --help' for more information.\n" {
		t.Errorf("exit %d stdout %q stderr %q", code, out.String(), errb.String())
	}
}

func TestDefaultFile(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "rc.conf")
	var out, errb bytes.Buffer
	if code := Main("sysrc", []string{"vm_enable=YES"}, &out, &errb, []string{rc}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if b, _ := os.ReadFile(rc); string(b) != "vm_enable=\"YES\"\n" {
		t.Errorf("rc.conf = %q", b)
	}
}
