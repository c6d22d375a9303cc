package jobvm

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Keys of the ownership marker written into a job VM's NAME.conf (vm-bhyve
// ignores keys it does not know). The name prefix alone proves nothing: an
// operator may have VMs called ci-something of their own. Only a VM whose
// marker names this host and runner is ever stopped or destroyed.
const (
	keyOwner   = "gitlab_runner_bhyve_owner"
	keyRunner  = "gitlab_runner_bhyve_runner"
	keyJob     = "gitlab_runner_bhyve_job"
	keyHolder  = "gitlab_runner_bhyve_holder"
	keyCreated = "gitlab_runner_bhyve_created"
	keyMAC     = "network0_mac"
)

// Owner identifies the runner that creates VMs: the host it runs on and the
// runner's name in config.toml (not its token, which rotates).
type Owner struct {
	HostID string
	Runner string
}

// ID is the value of the ownership marker: stable for a host and runner, and
// safe to store unquoted in a sysrc-format file.
func (o Owner) ID() string {
	sum := sha256.Sum256([]byte(o.HostID + "\x00" + o.Runner))
	return hex.EncodeToString(sum[:8])
}

// slug turns a runner name into the part of a VM name that tells an operator
// running `vm list` whose VM it is. vm-bhyve names allow [a-z0-9_-]; we drop
// '.' as well because vm-bhyve hands names to pgrep as a regular expression.
func slug(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= max {
			break
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		return "runner"
	}
	return out
}

// JobVMName is the VM name for a job: prefix, runner, job ID and concurrency
// slot, so `vm list` shows at a glance which job a VM serves.
func JobVMName(prefix, runner string, jobID int64, slot int) string {
	return fmt.Sprintf("%s%s-%d-%d", prefix, slug(runner, 24), jobID, slot)
}

// PoolVMName names a warm-pool VM, which serves no job yet: prefix, runner
// and a random suffix.
func PoolVMName(prefix, runner string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s%s-p%s", prefix, slug(runner, 24), hex.EncodeToString(b[:]))
}

// marker is the ownership record of one VM as read back from its NAME.conf.
type marker struct {
	owner   string
	runner  string
	job     int64
	holder  string
	created int64
}

func readMarker(conf map[string]string) (marker, bool) {
	m := marker{owner: conf[keyOwner], runner: conf[keyRunner], holder: conf[keyHolder]}
	if m.owner == "" {
		return marker{}, false
	}
	m.job, _ = strconv.ParseInt(conf[keyJob], 10, 64)
	m.created, _ = strconv.ParseInt(conf[keyCreated], 10, 64)
	return m, true
}
