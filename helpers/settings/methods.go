package settings

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/failure"
)

// SelectTemplate maps a job's image: onto the template VM to clone, as
// upstream's VM executors do (executors/vm GetBaseName):
//   - an empty image or the default template selects Template;
//   - with allowed_images empty, any other image: is ignored and Template is
//     used, so a project-wide `default: image: node:20` does not fail every
//     job. warning is then a complete line for the job log, printed as is by
//     both front-ends so they say the same words;
//   - otherwise the image must be a valid vm-bhyve name, must not carry
//     name_prefix (those are other jobs' VMs, and cloning one would hand its
//     contents to this job) and must match one of allowed_images in full.
//     Every refusal is a *failure.ConfigError that lists the patterns.
func (s *Settings) SelectTemplate(image string) (template, warning string, err error) {
	if image == "" || image == s.Template {
		return s.Template, "", nil
	}
	if len(s.AllowedImages) == 0 {
		return s.Template, fmt.Sprintf("WARNING: image %s is ignored: allowed_images is empty, so the job runs in the default template %s",
			strconv.Quote(abbreviate(image)), strconv.Quote(s.Template)), nil
	}
	d, err := s.parsed()
	if err != nil {
		return "", "", err
	}
	refuse := func(why string) error {
		return failure.Configf("%s: %s: image %s %s; expected %s", s.Path, d.allowedWhere, strconv.Quote(abbreviate(image)), why, s.allowedDescription())
	}
	if !ValidVMName(image) {
		return "", "", refuse("is not a valid vm-bhyve VM name (lowercase letters, digits, '_' and '-', starting with a letter or digit, no '.', no tag or @snapshot, at most 229 characters)")
	}
	if s.NamePrefix != "" && strings.HasPrefix(image, s.NamePrefix) {
		return "", "", refuse(fmt.Sprintf("starts with name_prefix %s, which marks job VMs, not templates", strconv.Quote(s.NamePrefix)))
	}
	for _, re := range d.allowed {
		if re.MatchString(image) {
			return image, "", nil
		}
	}
	return "", "", refuse("is not allowed")
}

// allowedDescription is for refusals, which only a non-empty allowed_images
// makes.
func (s *Settings) allowedDescription() string {
	quoted := make([]string, len(s.AllowedImages))
	for i, p := range s.AllowedImages {
		quoted[i] = strconv.Quote(p)
	}
	return fmt.Sprintf("no image: or image: %s (the default template), or a name matching one of %s (each pattern must match the whole name)",
		strconv.Quote(s.Template), strings.Join(quoted, ", "))
}

// Signers are the keys to offer to the guest's sshd: the identity_file key,
// or none when only a password is configured.
func (s *Settings) Signers() ([]ssh.Signer, error) {
	d, err := s.parsed()
	if err != nil {
		return nil, err
	}
	return append([]ssh.Signer(nil), d.signers...), nil
}

// HostKeysFor returns the host keys pinned for template: host_key, or the
// known_hosts_file entries whose patterns match the template name. With
// insecure_skip_host_key_check it returns no keys and no error; callers check
// SSH.InsecureSkipHostKeyCheck first. A template with no pinned key is a
// *failure.ConfigError naming the template and the file.
func (s *Settings) HostKeysFor(template string) ([]ssh.PublicKey, error) {
	if s.SSH.InsecureSkipHostKeyCheck {
		return nil, nil
	}
	d, err := s.parsed()
	if err != nil {
		return nil, err
	}
	if d.hostKey != nil {
		return []ssh.PublicKey{d.hostKey}, nil
	}
	if s.SSH.KnownHostsFile == "" {
		return nil, failure.Configf("%s: %s: no host key is pinned; expected %s", s.Path, d.pinWhere, pinHowTo(template))
	}
	keys, err := keysFor(d.knownHosts, template, s.SSH.KnownHostsFile)
	if err != nil {
		return nil, failure.Configf("%s: %s: %w", s.Path, d.pinWhere, err)
	}
	return keys, nil
}

// parsed returns what Load derived. Settings built in code (tests, tools)
// have none, so it is derived here from the exported fields, without caching:
// a *Settings must stay safe to share between goroutines.
func (s *Settings) parsed() (*derived, error) {
	if s.d != nil {
		return s.d, nil
	}
	d := &derived{allowedWhere: "allowed_images", templateWhere: "template", prefixWhere: "name_prefix"}
	var errs []error
	fail := func(key string, err error) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", s.Path, key, err))
	}
	for i, p := range s.AllowedImages {
		re, err := compileAnchored(p)
		if err != nil {
			fail(fmt.Sprintf("allowed_images[%d]", i), fmt.Errorf("%s is not a valid regular expression (%w)", strconv.Quote(p), err))
			continue
		}
		d.allowed = append(d.allowed, re)
	}
	if s.SSH.IdentityFile != "" {
		signer, err := readIdentity(s.SSH.IdentityFile)
		if err != nil {
			fail("ssh.identity_file", err)
		} else {
			d.signers = []ssh.Signer{signer}
		}
	}
	switch {
	case s.SSH.HostKey != "":
		d.pinWhere = "ssh.host_key"
		key, err := parseHostKey(s.SSH.HostKey)
		if err != nil {
			fail(d.pinWhere, err)
		}
		d.hostKey = key
	case s.SSH.KnownHostsFile != "":
		d.pinWhere = "ssh.known_hosts_file"
		hosts, err := readKnownHosts(s.SSH.KnownHostsFile)
		if err != nil {
			fail(d.pinWhere, err)
		}
		d.knownHosts = hosts
	default:
		d.pinWhere = "ssh.known_hosts_file"
	}
	if len(errs) > 0 {
		return nil, failure.Configf("%w", errors.Join(errs...))
	}
	return d, nil
}
