package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gitlab.com/bhyve-ci/gitlab-runner-bhyve/helpers/jobvm"
)

// admissionCheckTimeout bounds Acquire's memory reading: upstream calls
// Acquire in its request loop, which must not hang on a stuck sysctl.
const admissionCheckTimeout = 10 * time.Second

// admitDefault is Acquire's admission. The job, and so its size, is not
// known before GitLab hands it out, so Acquire asks whether a VM of the
// template's size fits; a job that asks for more waits in its prepare
// (Request, AdmissionWait). When the settings, the template or the
// free-memory reading fail, the job comes and fails in its prepare with
// the reason in its log, where operators look.
func (p *Supervisor) admitDefault(st *runnerState) error {
	host, err := p.jobHost()
	if err != nil {
		return nil
	}
	st.mu.Lock()
	r := st.runner
	st.mu.Unlock()
	s, err := r.Settings()
	if err != nil {
		return nil
	}
	m := host.Manager(s, "", "")
	size, err := m.Size()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(p.stop, admissionCheckTimeout)
	defer cancel()
	err = jobvm.Admit(ctx, m.Memory, size.Memory, m.Config.Limits, 0, nil)
	var refused *jobvm.AdmissionError
	if !errors.As(err, &refused) {
		st.setRefusing(p, r.Name, nil)
		return nil
	}
	p.metrics.AdmissionRefused(r.Name, "acquire")
	st.setRefusing(p, r.Name, refused)
	return fmt.Errorf("%w: %w", ErrNoMemory, refused)
}

// setRefusing logs when Acquire starts and stops refusing for memory: the
// runner logs "no free executor" only at debug level, and an operator
// wondering why no job starts needs the reason once, not every few seconds.
func (st *runnerState) setRefusing(p *Supervisor, name string, refused *jobvm.AdmissionError) {
	st.mu.Lock()
	was := st.refusing
	st.refusing = refused != nil
	st.mu.Unlock()
	switch {
	case refused != nil && !was:
		p.Logf("bhyve: runner %q: requesting no jobs until host memory frees up: %v", name, refused)
	case refused == nil && was:
		p.Logf("bhyve: runner %q: host memory is available again; requesting jobs", name)
	}
}
