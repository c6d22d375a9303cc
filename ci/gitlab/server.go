// Package gitlab is a fake GitLab for tests and the demo: it serves the
// runner API (/api/v4/runners..., /api/v4/jobs...) the way upstream
// gitlab-runner's network package calls it, plus real git repositories over
// smart HTTP, so the real runner binary registers, takes jobs, clones,
// streams its trace, uploads and downloads artifacts against it.
//
// It does not import upstream: ./ci/... builds without the module overlay.
// See README.md for what is served and where each behaviour comes from.
package gitlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Options configure a Server. The zero value works.
type Options struct {
	// Listener to serve on; nil listens on 127.0.0.1:0. Use sim's
	// Host.Listen to be reachable from the simulated host and its guests.
	Listener net.Listener
	// RegistrationToken accepted by POST /api/v4/runners; "" generates one.
	RegistrationToken string
	// LongPoll is how long POST /api/v4/jobs/request is held, as Workhorse
	// holds it, when the runner's last_update is current and no job is
	// queued. 0 answers 204 at once, as Rails does without Workhorse.
	LongPoll time.Duration
	// TraceUpdateInterval is sent as X-GitLab-Trace-Update-Interval.
	// GitLab sends 60s, or 3s while someone watches the job log; 0 means
	// 3s, since tests are always watching.
	TraceUpdateInterval time.Duration
	// FinalUpdateAccepts is how many times a final PUT /jobs/:id is
	// answered 202 (trace still being persisted) before 200, as GitLab
	// does with live trace chunks pending. 0 accepts at once.
	FinalUpdateAccepts int
	// FailureReasons GitLab claims to support (features.failure_reasons);
	// nil sends DefaultFailureReasons.
	FailureReasons []string
	// Dir holds repositories and artifacts; "" uses a temporary directory
	// that Close removes.
	Dir string
	// Logf, when set, receives one line per request (never a token).
	Logf func(format string, args ...any)
}

// Server is a running fake GitLab.
type Server struct {
	opts    Options
	ln      net.Listener
	http    *http.Server
	url     string
	dir     string
	tempDir bool
	serving sync.WaitGroup // one per listener

	closed bool // under mu: Close began, AddListener refuses

	mu           sync.Mutex
	regToken     string
	runners      map[string]*runner // by authentication token
	nextRunnerID int64
	jobs         map[int64]*job
	queue        []int64
	queueVersion int64
	queueChanged chan struct{} // closed and replaced whenever the queue changes
	nextJobID    int64
	projects     map[string]*project
	requests     []Request
}

// Request is one HTTP request the server answered.
type Request struct {
	Method   string
	Path     string
	Status   int
	At       time.Time
	Duration time.Duration
}

// Start serves a fake GitLab until Close.
func Start(opts Options) (*Server, error) {
	s := &Server{
		opts:         opts,
		runners:      map[string]*runner{},
		nextRunnerID: 1,
		jobs:         map[int64]*job{},
		queueChanged: make(chan struct{}),
		nextJobID:    1001,
		projects:     map[string]*project{},
	}
	if s.opts.TraceUpdateInterval <= 0 {
		s.opts.TraceUpdateInterval = 3 * time.Second
	}
	if s.opts.FailureReasons == nil {
		s.opts.FailureReasons = DefaultFailureReasons
	}
	s.regToken = opts.RegistrationToken
	if s.regToken == "" {
		// GitLab's registration tokens carry the GR1348941 prefix.
		s.regToken = "GR1348941" + randomToken(10)
	}
	s.dir = opts.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "fake-gitlab-")
		if err != nil {
			return nil, fmt.Errorf("fake gitlab: %w", err)
		}
		s.dir, s.tempDir = d, true
	}
	for _, sub := range []string{"repos", "artifacts"} {
		if err := os.MkdirAll(s.dir+"/"+sub, 0o755); err != nil {
			return nil, fmt.Errorf("fake gitlab: %w", err)
		}
	}
	s.ln = opts.Listener
	if s.ln == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("fake gitlab: %w", err)
		}
		s.ln = ln
	}
	s.url = "http://" + s.ln.Addr().String()
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	s.serve(s.ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		_ = s.http.Serve(ln)
	}()
}

// AddListener serves the same GitLab (one queue, one set of runners and
// repositories) on another listener too, as one GitLab instance is reached
// by runners on several networks. It returns the base URL runners there are
// configured with; job payloads name whichever address a runner reached
// (baseURL), so each runner and its guests get URLs that work for them.
// Close closes ln with the others.
func (s *Server) AddListener(ln net.Listener) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("fake gitlab: AddListener after Close")
	}
	s.serve(ln)
	return "http://" + ln.Addr().String(), nil
}

// Close stops serving, waits for the requests in flight (long polls end at
// once) and removes the temporary directory.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.bumpQueueLocked() // wake long polls
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	s.serving.Wait()
	if s.tempDir {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("fake gitlab close: %w", err)
	}
	return nil
}

// URL is the base URL runners are configured with (no /api/v4).
func (s *Server) URL() string { return s.url }

// RegistrationToken is the legacy registration token.
func (s *Server) RegistrationToken() string { return s.regToken }

// Requests returns every request answered so far, in order of completion.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.route(rec, r)
	d := time.Since(start)
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Status: rec.status, At: start, Duration: d})
	s.mu.Unlock()
	if s.opts.Logf != nil {
		s.opts.Logf("fake gitlab: %s %s -> %d (%v)", r.Method, r.URL.Path, rec.status, d.Round(time.Millisecond))
	}
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if !strings.HasPrefix(p, "/api/v4/") {
		if s.serveGit(w, r) {
			return
		}
		apiError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	p = strings.TrimPrefix(p, "/api/v4")
	switch {
	case p == "/runners" && r.Method == http.MethodPost:
		s.handleRegister(w, r)
	case p == "/runners" && r.Method == http.MethodDelete:
		s.handleUnregister(w, r)
	case p == "/runners/verify" && r.Method == http.MethodPost:
		s.handleVerify(w, r)
	case p == "/runners/managers" && r.Method == http.MethodDelete:
		s.handleUnregisterManager(w, r)
	case p == "/runners/reset_authentication_token" && r.Method == http.MethodPost:
		s.handleResetToken(w, r)
	case p == "/jobs/request" && r.Method == http.MethodPost:
		s.handleJobRequest(w, r)
	case strings.HasPrefix(p, "/jobs/"):
		s.routeJob(w, r, strings.TrimPrefix(p, "/jobs/"))
	default:
		apiError(w, http.StatusNotFound, "404 Not Found")
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Flush lets git http-backend's streamed pack reach the client as it is
// produced.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// apiError answers as Grape does: JSON {"message": ...}, which upstream's
// getMessageFromJSONResponse turns into its log's status text.
func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a request body; a body that is not JSON is Grape's 400.
// An empty body passes: Grape treats missing params as absent.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(v)
	if err != nil && !errors.Is(err, io.EOF) {
		apiError(w, http.StatusBadRequest, "400 Bad request - "+err.Error())
		return false
	}
	return true
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("fake gitlab: random token: %v", err))
	}
	return hex.EncodeToString(b)
}
