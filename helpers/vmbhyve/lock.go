package vmbhyve

import (
	"context"
	"sync"
)

// nameLocks serialises operations per VM name. vm-bhyve has no locking of its
// own (no flock anywhere; run.lock is written by `vm _run` only after network
// setup), so two `vm start X` can both pass vm::confirm_stopped and the second
// `_run` then destroys the first one's vmm. Entries are dropped when unused so
// the map does not grow with every job VM ever created. The zero value is
// ready to use.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	ch   chan struct{} // holds one token while locked
	refs int           // holders and waiters
}

// lock waits for name's lock or for ctx to end, so a caller stuck behind a
// long Stop can still be cancelled.
func (l *nameLocks) lock(ctx context.Context, name string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*nameLock{}
	}
	e := l.m[name]
	if e == nil {
		e = &nameLock{ch: make(chan struct{}, 1)}
		l.m[name] = e
	}
	e.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}

	select {
	case e.ch <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.ch
			release()
		})
	}, nil
}
