// Package buildkitesim is an in-memory stand-in for the Buildkite REST API
// calls the bridge makes (DESIGN §9), for `make dev` and tests: get a build
// with its jobs, list a pipeline's builds, list an organization's builds.
// It learns builds from the webhooks it is shown (Record: the dev stack
// hands it each webhook the receiver accepts, and POST /_sim/webhooks), so
// the reconciler and the enrichment see what Buildkite would have, and lets
// tests inject faults.
//
// Routes, under /v2 or at the root (BUILDKITE_API_URL may name either):
//
//	GET /organizations/{org}/pipelines/{pipeline}/builds/{number}
//	    exclude_jobs, exclude_pipeline, include_retried_jobs
//	GET /organizations/{org}/pipelines/{pipeline}/builds
//	    branch / branch[], state / state[] (finished = passed, failed,
//	    blocked, canceled), exclude_jobs, exclude_pipeline, page, per_page
//	    (default 30, at most 100)
//	GET /organizations/{org}/builds  (same parameters)
//	POST /_sim/webhooks  the simulator's own: learn a webhook body (Record)
//	    without any webhook being sent (make dev's lost webhook)
//
// What follows Buildkite's REST docs (pages/apis/rest_api/builds.md,
// rate_limits.md, the API overview):
//   - `Authorization: Bearer <token>`; otherwise 401 with a {"message"}
//     body. An empty configured token authorizes nothing.
//   - The response shapes of "Get a build" and "List builds for a pipeline":
//     the same keys, timestamps in ISO 8601 with milliseconds, null for
//     unset ones; builds newest first; only the latest try of a retried job
//     unless include_retried_jobs; job_state_counts on a single build only.
//   - Rate limits: 200 requests a minute for the organization and 50 for the
//     user (one token, one user here), with the RateLimit-* and
//     RateLimit-User-* headers on every answer; over either, 429 with the
//     documented body, whose reset is the seconds left in the window.
//   - Errors are {"message": …}: 404 "No pipeline found" / "No build found"
//     / "No organization found".
//
// Assumptions where the docs are silent:
//   - A blocked build (build.finished with blocked: true) keeps the state its
//     webhook said, as the docs describe, and the state filter matches it
//     only for `blocked` and `finished`.
//   - The branch filter is exact; the globs Buildkite accepts (`*dev*`) are
//     not implemented.
//   - The window is fixed: it starts with the first request after the last
//     one ended.
//   - An organization exists once a build of it was recorded; a pipeline
//     exists once a build of it was recorded and until Forget.
//   - creator and env are not in webhooks' trimmed payloads: creator is a
//     fixed made-up user whose e-mail is example.com's, env is {}; so the
//     shapes are complete and a client that let them through would show it.
package buildkitesim

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/local/simhttp"
)

// Documented default limits, per minute.
const (
	DefaultOrgLimit  = 200
	DefaultUserLimit = 50
	window           = time.Minute
)

// Request is what a fault hook is told about a call.
type Request struct {
	Org, Pipeline string // Pipeline is "" for the organization's list
	Number        int64  // 0 for lists
	Branch        string // the branch filter of a list, if any
}

// Fault replaces the answer to one call. Delay is applied first (until the
// client gives up or Close); then Malformed answers 200 with a cut-off
// body; else Status (429 when only Reset is set, else 500 when 0) with a
// {"message"} body, and for a 429 the rate-limit headers with Reset.
type Fault struct {
	Status    int
	Reset     time.Duration // 429: seconds to the window's reset
	Delay     time.Duration
	Malformed bool
}

type pipelineKey struct{ org, pipeline string }

type buildKey struct {
	pipelineKey
	number int64
}

// record is one build as the simulator knows it.
type record struct {
	build buildkite.Build
	jobs  []buildkite.Job // in the order first seen
}

// Server is the simulator; it implements http.Handler and is safe for
// concurrent use.
type Server struct {
	token  simhttp.Token
	closed chan struct{}
	once   sync.Once

	mu        sync.Mutex
	now       func() time.Time
	builds    map[buildKey]*record
	pipelines map[pipelineKey]*buildkite.Pipeline
	orgs      map[string]bool
	gone      map[pipelineKey]bool
	fault     func(call int, r Request) *Fault
	calls     int // authorized API requests, faulted included
	orgLimit  int
	userLimit int
	winStart  time.Time
	winCount  int
}

// New returns a simulator that accepts token, with the documented limits.
func New(token string) *Server {
	return &Server{
		token:     simhttp.NewToken(token),
		closed:    make(chan struct{}),
		now:       time.Now,
		builds:    map[buildKey]*record{},
		pipelines: map[pipelineKey]*buildkite.Pipeline{},
		orgs:      map[string]bool{},
		gone:      map[pipelineKey]bool{},
		orgLimit:  DefaultOrgLimit,
		userLimit: DefaultUserLimit,
	}
}

// SetClock replaces the clock of the rate-limit window (tests).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetLimits sets the per-minute limits; 0 turns one off.
func (s *Server) SetLimits(org, user int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orgLimit, s.userLimit = org, user
}

// SetFault installs f, called for every authorized API request with its
// 1-based number and what it asks; a non-nil Fault is answered instead. nil
// removes the hook.
func (s *Server) SetFault(f func(call int, r Request) *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Calls is the number of authorized API requests so far.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Forget makes a pipeline unknown, as if deleted or renamed: its builds
// answer 404 until a webhook of it is recorded again.
func (s *Server) Forget(org, pipeline string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone[pipelineKey{org, pipeline}] = true
}

// Close releases requests held by a Delay fault; call it before closing the
// http.Server that serves s.
func (s *Server) Close() { s.once.Do(func() { close(s.closed) }) }

// Record learns from one webhook payload: build events set the build (and
// its pipeline), job.finished adds or updates the job and marks the job it
// retried. Payloads without a build, an org or a pipeline slug are ignored.
func (s *Server) Record(p *buildkite.Payload) {
	if p == nil || p.Build == nil || p.Build.Number <= 0 {
		return
	}
	org, slug := p.OrgSlug(), p.PipelineSlug()
	if org == "" || slug == "" {
		return
	}
	pk := pipelineKey{org, slug}
	k := buildKey{pk, p.Build.Number}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orgs[org] = true
	delete(s.gone, pk)
	pl := s.pipelines[pk]
	if pl == nil {
		pl = &buildkite.Pipeline{Slug: slug}
		s.pipelines[pk] = pl
	}
	if p.Pipeline != nil {
		pl.ID = cmp.Or(p.Pipeline.ID, pl.ID)
		pl.Name = cmp.Or(p.Pipeline.Name, pl.Name)
		pl.DefaultBranch = cmp.Or(p.Pipeline.DefaultBranch, pl.DefaultBranch)
	}
	rec := s.builds[k]
	if rec == nil {
		rec = &record{}
		s.builds[k] = rec
	}
	// A job.finished carries its build as it was then (running, failing),
	// and often arrives after build.finished: it must not undo the outcome.
	if p.Job == nil || !terminal(rec.build.State) || rec.build.Blocked {
		rec.build = *p.Build
	}
	if j := p.Job; j != nil && j.ID != "" {
		i := slices.IndexFunc(rec.jobs, func(x buildkite.Job) bool { return x.ID == j.ID })
		if i < 0 {
			rec.jobs = append(rec.jobs, *j)
		} else {
			rec.jobs[i] = *j
		}
		if j.RetrySource != nil && j.RetrySource.JobID != "" {
			for i := range rec.jobs {
				if rec.jobs[i].ID == j.RetrySource.JobID {
					rec.jobs[i].Retried = true
				}
			}
		}
	}
}

func terminal(state string) bool {
	switch state {
	case "passed", "failed", "canceled", "skipped", "not_run":
		return true
	}
	return false
}

// limits counts one request against the window and returns the rate-limit
// headers; ok is false when either limit is exceeded.
func (s *Server) limits(h http.Header) (ok bool, scope string, limit, current int, reset int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.winStart.IsZero() || now.Sub(s.winStart) >= window {
		s.winStart, s.winCount = now, 0
	}
	s.winCount++
	reset = int64((window - now.Sub(s.winStart) + time.Second - 1) / time.Second)
	set := func(prefix, sc string, lim int) bool {
		if lim <= 0 {
			return true
		}
		h.Set(prefix+"Scope", sc)
		h.Set(prefix+"Limit", strconv.Itoa(lim))
		h.Set(prefix+"Remaining", strconv.Itoa(max(lim-s.winCount, 0)))
		h.Set(prefix+"Reset", strconv.FormatInt(reset, 10))
		if s.winCount > lim {
			h.Set(prefix+"Warning", "You have exceeded your API rate limit.")
			return false
		}
		return true
	}
	userOK := set("RateLimit-User-", "rest_user", s.userLimit)
	orgOK := set("RateLimit-", "rest", s.orgLimit)
	switch {
	case !userOK:
		return false, "rest_user", s.userLimit, s.winCount, reset
	case !orgOK:
		return false, "rest", s.orgLimit, s.winCount, reset
	}
	return true, "", 0, 0, reset
}

// nextFault counts the call and asks the hook outside the lock, so the
// hook may use the Server.
func (s *Server) nextFault(r Request) *Fault {
	s.mu.Lock()
	s.calls++
	n, f := s.calls, s.fault
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(n, r)
}
