package settings

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// rawValue keeps a TOML value as the decoder produced it (string, int64,
// float64, bool, time, []any, map[string]any). Type checking happens in
// resolve.go so that every mistake is reported with the file, the key and what
// was expected, instead of the decoder's Go-centric "incompatible types".
type rawValue struct{ v any }

// UnmarshalTOML makes the decoder hand over the value untouched.
func (r *rawValue) UnmarshalTOML(v any) error {
	r.v = v
	return nil
}

// document is the top level of bhyve.toml. Both tables stay Primitive so that
// each section is decoded on its own: that is what lets a runner section
// override [defaults] key by key, and keeps a broken section of some other
// runner from failing this runner's jobs.
type document struct {
	Defaults toml.Primitive `toml:"defaults"`
	Runners  toml.Primitive `toml:"runners"`
}

// layerDoc is one section, [defaults] or [runners."NAME"]. Every key is
// optional in a section; resolve.go decides what is required once sections are
// overlaid. The toml tags are the file's vocabulary and drive the unknown-key
// check, the suggestions and the documentation test.
type layerDoc struct {
	Template          *rawValue `toml:"template"`
	Snapshot          *rawValue `toml:"snapshot"`
	AllowedImages     *rawValue `toml:"allowed_images"`
	VMCommand         *rawValue `toml:"vm_command"`
	SysrcCommand      *rawValue `toml:"sysrc_command"`
	ZFSCommand        *rawValue `toml:"zfs_command"`
	SysctlCommand     *rawValue `toml:"sysctl_command"`
	InstallCommand    *rawValue `toml:"install_command"`
	RmCommand         *rawValue `toml:"rm_command"`
	HostKeys          *rawValue `toml:"host_keys"`
	Privilege         *rawValue `toml:"privilege"`
	Isolation         *rawValue `toml:"isolation"`
	ArpCommand        *rawValue `toml:"arp_command"`
	IfconfigCommand   *rawValue `toml:"ifconfig_command"`
	VMDir             *rawValue `toml:"vm_dir"`
	LeaseFile         *rawValue `toml:"lease_file"`
	NamePrefix        *rawValue `toml:"name_prefix"`
	HostID            *rawValue `toml:"host_id"`
	BootTimeout       *rawValue `toml:"boot_timeout"`
	SSHConnectTimeout *rawValue `toml:"ssh_connect_timeout"`
	StopTimeout       *rawValue `toml:"stop_timeout"`
	KillGrace         *rawValue `toml:"kill_grace"`
	BuildsDir         *rawValue `toml:"builds_dir"`
	CacheDir          *rawValue `toml:"cache_dir"`
	Shell             *rawValue `toml:"shell"`
	MaxCPUs           *rawValue `toml:"max_cpus"`
	MaxMemory         *rawValue `toml:"max_memory"`
	MemoryReserve     *rawValue `toml:"memory_reserve"`
	SSH               *sshDoc   `toml:"ssh"`
	Pool              *poolDoc  `toml:"pool"`
}

type sshDoc struct {
	User                     *rawValue `toml:"user"`
	Port                     *rawValue `toml:"port"`
	IdentityFile             *rawValue `toml:"identity_file"`
	KnownHostsFile           *rawValue `toml:"known_hosts_file"`
	HostKey                  *rawValue `toml:"host_key"`
	Password                 *rawValue `toml:"password"`
	PasswordFile             *rawValue `toml:"password_file"`
	KeepAliveInterval        *rawValue `toml:"keepalive_interval"`
	InsecureSkipHostKeyCheck *rawValue `toml:"insecure_skip_host_key_check"`
}

type poolDoc struct {
	IdleCount          *rawValue `toml:"idle_count"`
	IdleTime           *rawValue `toml:"idle_time"`
	MaxUseCount        *rawValue `toml:"max_use_count"`
	MaxConcurrentBoots *rawValue `toml:"max_concurrent_boots"`
}

// table describes the keys one TOML table accepts.
type table struct {
	keys []string          // in declaration order
	sub  map[string]*table // sub-tables by key
}

func (t *table) has(key string) bool {
	for _, k := range t.keys {
		if k == key {
			return true
		}
	}
	return false
}

var (
	rawValueType = reflect.TypeOf(&rawValue{})
	sectionTable = describeTable(reflect.TypeOf(layerDoc{}))
	topTable     = &table{keys: []string{"defaults", "runners"}}
)

func describeTable(t reflect.Type) *table {
	tab := &table{sub: map[string]*table{}}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		tab.keys = append(tab.keys, name)
		if f.Type != rawValueType {
			tab.sub[name] = describeTable(f.Type.Elem())
		}
	}
	return tab
}

// sectionKeys lists every key a section accepts, sub-table keys dotted
// ("ssh.port").
// The documentation test uses it to keep REFERENCE.md and the example complete.
func sectionKeys() []string {
	var out []string
	var walk func(prefix string, t *table)
	walk = func(prefix string, t *table) {
		for _, k := range t.keys {
			if sub, ok := t.sub[k]; ok {
				walk(prefix+k+".", sub)
				continue
			}
			out = append(out, prefix+k)
		}
	}
	walk("", sectionTable)
	return out
}

// flatten turns a decoded section into dotted key -> raw value, keeping only
// keys the section actually sets.
func flatten(prefix string, v reflect.Value, out map[string]any) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := prefix + t.Field(i).Tag.Get("toml")
		f := v.Field(i)
		if f.IsNil() {
			continue
		}
		if f.Type() == rawValueType {
			out[name] = f.Interface().(*rawValue).v
			continue
		}
		flatten(name+".", f, out)
	}
}

// section is one decoded layer of the overlay.
type section struct {
	name   string // as written in messages: defaults, runners."ci-1"
	values map[string]any
}

// sectionName renders a runner's section as an operator would write it in the
// file. Names are always quoted because runner names often hold characters
// (spaces, dots) that would otherwise change the meaning of the path.
func sectionName(runner string) string { return "runners." + quoteKey(runner) }

func quoteKey(k string) string { return strconv.Quote(k) }

// keyPath renders a toml.Key as a dotted path, quoting the runner name the way
// sectionName does so messages and file agree.
func keyPath(k toml.Key) string {
	parts := make([]string, len(k))
	for i, p := range k {
		if i == 1 && k[0] == "runners" {
			parts[i] = quoteKey(p)
			continue
		}
		parts[i] = p
		if p == "" || strings.ContainsAny(p, " .\"'\t") {
			parts[i] = quoteKey(p)
		}
	}
	return strings.Join(parts, ".")
}

// decodeSection decodes one Primitive into a section, after checking that
// the section and its sub-tables really are tables (the decoder's own errors
// for that are in Go terms).
func decodeSection(file string, md *toml.MetaData, prim toml.Primitive, key toml.Key, name string) (section, error) {
	sec := section{name: name, values: map[string]any{}}
	if !md.IsDefined(key...) {
		return sec, nil
	}
	if err := checkTable(file, md, key, name); err != nil {
		return sec, err
	}
	var errs []error
	for _, sub := range sortedKeys(sectionTable.sub) {
		subKey := append(append(toml.Key{}, key...), sub)
		if md.IsDefined(subKey...) {
			if err := checkTable(file, md, subKey, name+"."+sub); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return sec, errors.Join(errs...)
	}
	var doc layerDoc
	if err := md.PrimitiveDecode(prim, &doc); err != nil {
		// Unreachable with rawValue leaves and tables checked above; kept so
		// that a decoder change surfaces as a message rather than a panic.
		return sec, fmt.Errorf("%s: %s: %w", file, name, err)
	}
	flatten("", reflect.ValueOf(&doc), sec.values)
	return sec, nil
}

// checkTable is called for defined keys only. Tables created implicitly by a
// deeper header ([runners."x"] creates runners) have no recorded type.
func checkTable(file string, md *toml.MetaData, key toml.Key, name string) error {
	switch typ := md.Type(key...); typ {
	case "Hash", "":
		return nil
	case "ArrayHash":
		return fmt.Errorf("%s: %s: is an array of tables ([[%s]]); expected a single table [%s]", file, name, name, name)
	default:
		return fmt.Errorf("%s: %s: is %s value; expected a table [%s]", file, name, withArticle(strings.ToLower(typ)), name)
	}
}

// unknownKeys reports keys of the given sections that this package does not
// know. MetaData.Undecoded finds keys no field took; the exact-spelling pass
// catches what the decoder matched case-insensitively (it maps "Template" onto
// template), because TOML keys are case-sensitive and a silently accepted
// variant would hide a typo. Only the top level, [defaults] and the selected
// runner are checked, so one runner's typo does not stop another's jobs.
func unknownKeys(file string, md *toml.MetaData, selected string) error {
	inScope := func(k toml.Key) (rel toml.Key, ok bool) {
		switch {
		case len(k) == 1:
			return nil, true
		case k[0] == "defaults":
			return k[1:], true
		case k[0] == "runners" && len(k) >= 2 && k[1] == selected:
			return k[2:], true
		}
		return nil, false
	}
	reported := map[string]bool{}
	var errs []error
	report := func(k toml.Key, rel toml.Key) {
		// Report an unknown table once, not once per key inside it.
		for i := 1; i < len(k); i++ {
			if reported[keyPath(k[:i])] {
				return
			}
		}
		p := keyPath(k)
		if reported[p] {
			return
		}
		reported[p] = true
		errs = append(errs, fmt.Errorf("%s: %s: unknown key; %s", file, p, suggest(k, rel)))
	}
	for _, k := range md.Undecoded() {
		if rel, ok := inScope(k); ok {
			report(k, rel)
		}
	}
	for _, k := range md.Keys() {
		rel, ok := inScope(k)
		if !ok {
			continue
		}
		if rel == nil {
			if !topTable.has(k[0]) {
				report(k, rel)
			}
			continue
		}
		t := sectionTable
		for i, part := range rel {
			if !t.has(part) {
				report(k[:len(k)-len(rel)+i+1], rel[:i+1])
				break
			}
			sub, isTable := t.sub[part]
			if !isTable {
				break
			}
			t = sub
		}
	}
	return errors.Join(errs...)
}

// renamed maps names an operator may bring from config.toml ([runners.ssh],
// [runners.virtualbox]) or the original shell script to this file's names.
var renamed = map[string]string{
	"base_name":                        "template",
	"base_snapshot":                    "snapshot",
	"image":                            "template",
	"disable_strict_host_key_checking": "insecure_skip_host_key_check",
	"known_hosts":                      "known_hosts_file",
	"identity":                         "identity_file",
	"keepalive":                        "keepalive_interval",
}

// unused explains keys that exist upstream but have no meaning here.
var unused = map[string]string{
	"host": "the VM's address comes from the DHCP lease, so there is no host to set",
}

// suggest explains what an unknown key probably should have been. rel is the
// key relative to its section (nil at the top level).
func suggest(k toml.Key, rel toml.Key) string {
	last := k[len(k)-1]
	if rel == nil {
		if best := closest(last, topTable.keys); best != "" {
			return fmt.Sprintf("did you mean %q?", best)
		}
		if sectionTable.has(last) {
			return fmt.Sprintf("did you mean to set %s inside [defaults] or a [runners.\"NAME\"] section?", last)
		}
		return `expected only [defaults] and [runners."NAME"] tables at the top level`
	}
	// Find the table the key sits in.
	t := sectionTable
	prefix := ""
	for _, part := range rel[:len(rel)-1] {
		sub, ok := t.sub[part]
		if !ok {
			return "expected no sub-table here"
		}
		t = sub
		prefix = part + "."
	}
	if why, ok := unused[last]; ok {
		return why
	}
	if to, ok := renamed[strings.ToLower(last)]; ok && t.has(to) {
		return fmt.Sprintf("did you mean %q?", to)
	}
	if t.has(strings.ToLower(last)) {
		return fmt.Sprintf("keys are case-sensitive; did you mean %q?", strings.ToLower(last))
	}
	if best := closest(last, t.keys); best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	// A key that belongs to a neighbouring table.
	if prefix == "" {
		for _, name := range sortedKeys(t.sub) {
			if t.sub[name].has(last) {
				return fmt.Sprintf("did you mean %s.%s (in the %s sub-table)?", name, last, name)
			}
		}
	} else if sectionTable.has(last) {
		return fmt.Sprintf("did you mean %q outside the %s sub-table?", last, strings.TrimSuffix(prefix, "."))
	}
	return "expected one of: " + strings.Join(t.keys, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// closest returns the candidate nearest to s by edit distance when it is near
// enough to be a typo: at most 2 edits, and fewer than a third of the word.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), c)
		if d < bestD && d*3 <= len(c) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Damerau (optimal string alignment) distance, so that a
// swapped pair of letters counts as one typo.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

func withArticle(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an " + word
	}
	return "a " + word
}
