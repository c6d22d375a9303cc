package tree

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCopyKeepsModesLinksAndSkips(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "tmp"), 0o755))
	require.NoError(t, os.Chmod(filepath.Join(src, "tmp"), 0o777|os.ModeSticky))
	require.NoError(t, os.WriteFile(filepath.Join(src, "key"), []byte("secret"), 0o600))
	require.NoError(t, os.Symlink("key", filepath.Join(src, "link")))
	require.NoError(t, os.MkdirAll(filepath.Join(src, ".zfs", "snapshot"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dst, "etc"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(src, "etc"), 0o700))
	require.NoError(t, os.Chmod(dst, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dst, "key"), []byte("old"), 0o644))

	require.NoError(t, Copy(src, dst, func(rel string) bool { return strings.HasPrefix(rel, ".zfs") }))

	info, err := os.Stat(filepath.Join(dst, "tmp"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|os.ModeSticky|0o777, info.Mode(), "sticky bit kept")
	data, err := os.ReadFile(filepath.Join(dst, "key"))
	require.NoError(t, err)
	assert.Equal(t, "secret", string(data), "an existing file is replaced")
	info, err = os.Stat(filepath.Join(dst, "key"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	link, err := os.Readlink(filepath.Join(dst, "link"))
	require.NoError(t, err)
	assert.Equal(t, "key", link)
	assert.NoDirExists(t, filepath.Join(dst, ".zfs"))
	info, err = os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "dst keeps its own mode")
	info, err = os.Stat(filepath.Join(dst, "etc"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), info.Mode().Perm(), "an existing directory keeps its mode")
}

// A provisioned guest's home must stay its user's across snapshot, clone
// and boot; the copy runs as root, so owners can be kept.
func TestCopyKeepsOwners(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "dst")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "home", "u"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(src, "home", "u", "f"), nil, 0o600))
	for _, p := range []string{"home/u", "home/u/f"} {
		require.NoError(t, os.Lchown(filepath.Join(src, p), 4321, 4322))
	}
	require.NoError(t, Copy(src, dst, nil))
	for _, p := range []string{"home/u", "home/u/f"} {
		info, err := os.Lstat(filepath.Join(dst, p))
		require.NoError(t, err)
		st := info.Sys().(*syscall.Stat_t)
		assert.Equal(t, [2]uint32{4321, 4322}, [2]uint32{st.Uid, st.Gid}, p)
	}
}
