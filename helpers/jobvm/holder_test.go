package jobvm

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const holderChildEnv = "JOBVM_TEST_HOLDER_OF"

// TestMain lets the test binary act as a second checking process: with
// holderChildEnv=PID:HOLDER it prints CurrentHolder(PID) and whether HOLDER
// is alive, as `bhyve-executor sweep` run by an operator would see them.
func TestMain(m *testing.M) {
	if arg := os.Getenv(holderChildEnv); arg != "" {
		pidText, holder, _ := strings.Cut(arg, ":")
		pid, err := strconv.Atoi(pidText)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		h, err := CurrentHolder(pid)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		alive, err := Holder(holder).Alive()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("%s %t\n", h, alive)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The service writes the marker, an operator's sweep checks it, each with
// its own TZ and locale. Both must see the same value, and it must fit the
// sudoers pattern the README gives for sysrc.
func TestHolderIsTheSameInEveryLocaleAndTimeZone(t *testing.T) {
	self, err := CurrentHolder(os.Getpid())
	require.NoError(t, err)
	alive, err := self.Alive()
	require.NoError(t, err)
	require.True(t, alive)
	assert.Regexp(t, sudoersHolderPattern(t), keyHolder+"="+string(self))

	for _, env := range [][]string{
		{"TZ=UTC", "LC_ALL=C"},
		{"TZ=Pacific/Chatham", "LC_ALL=C.UTF-8", "LC_TIME=de_DE.UTF-8"},
		{"TZ=America/St_Johns", "LANG=fr_FR.UTF-8", "LC_TIME=ja_JP.UTF-8"},
		{"TZ=<+1345>-13:45"},
	} {
		t.Run(strings.Join(env, " "), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(withoutLocale(os.Environ()), env...)
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d:%s", holderChildEnv, os.Getpid(), self))
			out, err := cmd.Output()
			require.NoError(t, err, "child: %s", exitStderr(err))
			assert.Equal(t, string(self)+" true\n", string(out), "the holder as another process sees it, and whether it is alive")
		})
	}
}

func withoutLocale(env []string) []string {
	var kept []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TZ=") && !strings.HasPrefix(kv, "LC_") && !strings.HasPrefix(kv, "LANG=") && !strings.HasPrefix(kv, holderChildEnv+"=") {
			kept = append(kept, kv)
		}
	}
	return kept
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// sudoersHolderPattern is the README's sudoers pattern for the holder
// argument, anchored as sudo anchors it.
func sudoersHolderPattern(t *testing.T) *regexp.Regexp {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`/usr/sbin/sysrc \^.* (` + keyHolder + `=\S+) `).FindSubmatch(readme)
	require.NotNil(t, m, "README's sudoers rule for sysrc names %s", keyHolder)
	return regexp.MustCompile(`^(?:` + string(m[1]) + `)$`)
}

// kinfoProc lays out the fields processStartFromKinfo reads at the offsets
// FreeBSD's sys/sys/user.h gives them on amd64 and arm64 (see holder.go).
// No FreeBSD machine is at hand here to capture one, so the rest of the
// 1088 bytes is left zero.
func kinfoProc(structSize, pid int32, startSec, startUsec int64) []byte {
	b := make([]byte, kinfoProcSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(structSize))
	le.PutUint32(b[kinfoPIDOffset:], uint32(pid))
	le.PutUint64(b[kinfoStartOffset:], uint64(startSec))
	le.PutUint64(b[kinfoStartOffset+8:], uint64(startUsec))
	return b
}

func TestProcessStartFromKinfo(t *testing.T) {
	const bootSec, bootUsec = 1_717_000_000, 500_000
	cases := []struct {
		name    string
		kinfo   []byte
		want    string
		wantErr string
	}{
		{name: "borrows a second", kinfo: kinfoProc(1088, 4242, 1_717_171_717, 123_456), want: "171716623456"},
		{name: "started at boot", kinfo: kinfoProc(1088, 4242, bootSec, bootUsec), want: "0"},
		{name: "no such process", kinfo: nil, wantErr: errNoProcess.Error()},
		{name: "truncated", kinfo: kinfoProc(1088, 4242, bootSec, bootUsec)[:400], wantErr: "kinfo_proc of 400 bytes, expected 1088"},
		{name: "32-bit layout", kinfo: kinfoProc(768, 4242, bootSec, bootUsec), wantErr: "kinfo_proc ki_structsize 768, expected 1088 (unknown layout)"},
		{name: "other process", kinfo: kinfoProc(1088, 4243, bootSec, bootUsec), wantErr: "kinfo_proc is for pid 4243, expected 4242"},
		{name: "before boot", kinfo: kinfoProc(1088, 4242, bootSec, bootUsec-1), wantErr: "kinfo_proc ki_start 1717000000.499999 is before kern.boottime 1717000000.500000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := processStartFromKinfo(tc.kinfo, 4242, bootSec, bootUsec)
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}

	t.Run("a clock step moves ki_start and kern.boottime alike", func(t *testing.T) {
		before, err := processStartFromKinfo(kinfoProc(1088, 4242, 1_717_171_717, 123_456), 4242, bootSec, bootUsec)
		require.NoError(t, err)
		// ntpd stepped the clock back by 3.7 s: fill_kinfo_proc_only adds
		// the new boot time to the same p_start.
		after, err := processStartFromKinfo(kinfoProc(1088, 4242, 1_717_171_713, 423_456), 4242, bootSec-4, 800_000)
		require.NoError(t, err)
		assert.Equal(t, before, after)
	})
}
