package buildkitesim

import (
	"cmp"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/local/simhttp"
)

const (
	msgUnauthorized = "Authentication required. Please supply a valid API Access Token: https://buildkite.com/docs/apis/rest-api#authentication"
	defaultPerPage  = 30
	maxPerPage      = 100
)

// ServeHTTP routes the simulator's endpoints (see the package comment).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.EscapedPath(), "/v2")
	seg := strings.Split(strings.Trim(path, "/"), "/")
	for i := range seg {
		seg[i], _ = url.PathUnescape(seg[i])
	}
	var req Request
	switch {
	case len(seg) == 3 && seg[0] == "organizations" && seg[2] == "builds":
		req = Request{Org: seg[1]}
	case len(seg) == 5 && seg[0] == "organizations" && seg[2] == "pipelines" && seg[4] == "builds":
		req = Request{Org: seg[1], Pipeline: seg[3]}
	case len(seg) == 6 && seg[0] == "organizations" && seg[2] == "pipelines" && seg[4] == "builds":
		n, err := strconv.ParseInt(seg[5], 10, 64)
		if err != nil || n <= 0 {
			writeJSON(w, http.StatusNotFound, message("No build found"))
			return
		}
		req = Request{Org: seg[1], Pipeline: seg[3], Number: n}
	case path == "" || path == "/":
		writeJSON(w, http.StatusOK, map[string]any{"message": "🛠", "timestamp": time.Now().Unix()})
		return
	case path == "/_sim/webhooks":
		s.serveRecord(w, r)
		return
	default:
		writeJSON(w, http.StatusNotFound, message("Not Found"))
		return
	}
	if !s.admit(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	q := r.URL.Query()
	req.Branch = q.Get("branch")
	if f := s.nextFault(req); f != nil && s.applyFault(w, r, f) {
		return
	}
	if ok, scope, limit, current, reset := s.limits(w.Header()); !ok {
		writeJSON(w, http.StatusTooManyRequests, map[string]any{
			"message": "You have exceeded your API rate limit. Please wait " + strconv.FormatInt(reset, 10) + " seconds before making more requests.",
			"scope":   scope, "limit": limit, "current": current, "reset": reset,
		})
		return
	}
	opts := shape{jobs: q.Get("exclude_jobs") != "true", pipeline: q.Get("exclude_pipeline") != "true", retried: q.Get("include_retried_jobs") == "true"}
	if req.Number > 0 {
		s.serveBuild(w, req, opts)
		return
	}
	s.serveList(w, req, q, opts)
}

// admit answers 405 to a method not in allow and 401 to a request without
// the token; true means neither.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, allow ...string) bool {
	if !slices.Contains(allow, r.Method) {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, message("Method Not Allowed"))
		return false
	}
	if !s.token.Matches(simhttp.Bearer(r.Header.Get("Authorization"))) {
		writeJSON(w, http.StatusUnauthorized, message(msgUnauthorized))
		return false
	}
	return true
}

// maxRecordBody bounds a body POSTed to /_sim/webhooks, like the receiver's
// MAX_BODY_BYTES default.
const maxRecordBody = 1 << 20

// serveRecord is the simulator's own route (not Buildkite's): POST a
// webhook body to /_sim/webhooks, with the API token, and the simulator
// learns it as if Buildkite had run the build, while no webhook is sent.
// make dev's way to lose a webhook on purpose.
func (s *Server) serveRecord(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r, http.MethodPost) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRecordBody+1))
	if err != nil || len(body) > maxRecordBody {
		writeJSON(w, http.StatusRequestEntityTooLarge, message("body too large"))
		return
	}
	p, err := buildkite.Parse(body, r.Header.Get("X-Buildkite-Event"))
	if err != nil || p.Build == nil || p.Build.Number <= 0 || p.OrgSlug() == "" || p.PipelineSlug() == "" {
		writeJSON(w, http.StatusUnprocessableEntity, message("not a build or job webhook body with a build number and pipeline URLs"))
		return
	}
	s.Record(p)
	writeJSON(w, http.StatusOK, map[string]any{"recorded": p.OrgSlug() + "/" + p.PipelineSlug() + " #" + strconv.FormatInt(p.Build.Number, 10), "state": p.Build.State})
}

func (s *Server) serveBuild(w http.ResponseWriter, req Request, opts shape) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pk := pipelineKey{req.Org, req.Pipeline}
	if _, ok := s.pipelines[pk]; !ok || s.gone[pk] {
		writeJSON(w, http.StatusNotFound, message("No pipeline found"))
		return
	}
	rec := s.builds[buildKey{pk, req.Number}]
	if rec == nil {
		writeJSON(w, http.StatusNotFound, message("No build found"))
		return
	}
	opts.counts = true
	writeJSON(w, http.StatusOK, s.render(pk, rec, opts))
}

func (s *Server) serveList(w http.ResponseWriter, req Request, q url.Values, opts shape) {
	branches := append(q["branch"], q["branch[]"]...)
	states := append(q["state"], q["state[]"]...)
	if i := slices.Index(states, "finished"); i >= 0 {
		states = append(states, "passed", "failed", "blocked", "canceled")
	}
	perPage := defaultPerPage
	if n, err := strconv.Atoi(q.Get("per_page")); err == nil && n > 0 {
		perPage = min(n, maxPerPage)
	}
	page := 1
	if n, err := strconv.Atoi(q.Get("page")); err == nil && n > 0 {
		page = n
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Pipeline != "" {
		pk := pipelineKey{req.Org, req.Pipeline}
		if _, ok := s.pipelines[pk]; !ok || s.gone[pk] {
			writeJSON(w, http.StatusNotFound, message("No pipeline found"))
			return
		}
	} else if !s.orgs[req.Org] {
		writeJSON(w, http.StatusNotFound, message("No organization found"))
		return
	}
	var keys []buildKey
	for k, rec := range s.builds {
		if k.org != req.Org || (req.Pipeline != "" && k.pipeline != req.Pipeline) || s.gone[k.pipelineKey] {
			continue
		}
		if len(branches) > 0 && !slices.Contains(branches, rec.build.Branch) {
			continue
		}
		if len(states) > 0 && !slices.Contains(states, filterState(&rec.build)) {
			continue
		}
		keys = append(keys, k)
	}
	// Newest first: by creation, which a build number follows within a
	// pipeline; across pipelines by created_at.
	slices.SortFunc(keys, func(a, b buildKey) int {
		if a.pipelineKey == b.pipelineKey {
			return cmp.Compare(b.number, a.number)
		}
		return s.builds[b].build.CreatedAt.Compare(s.builds[a].build.CreatedAt.Time)
	})
	out := []apiBuild{}
	for i := (page - 1) * perPage; i < len(keys) && i < page*perPage; i++ {
		out = append(out, s.render(keys[i].pipelineKey, s.builds[keys[i]], opts))
	}
	writeJSON(w, http.StatusOK, out)
}

// filterState is the state a list filter sees (see the package comment).
func filterState(b *buildkite.Build) string {
	if b.Blocked {
		return "blocked"
	}
	return b.State
}

// applyFault waits out f.Delay, then answers as f says; false means f was
// a delay only and the call is to be served as usual.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		case <-s.closed:
			panic(http.ErrAbortHandler)
		}
	}
	status := f.Status
	if status == 0 && f.Reset > 0 {
		status = http.StatusTooManyRequests
	}
	switch {
	case f.Malformed:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"id":"f62a1b4d-10f9-4790-bc1c-e2c3a0c80983","number":2,"state":"pass`))
	case status == http.StatusTooManyRequests:
		reset := strconv.FormatInt(int64(f.Reset/time.Second), 10)
		for _, p := range []string{"RateLimit-", "RateLimit-User-"} {
			w.Header().Set(p+"Remaining", "0")
			w.Header().Set(p+"Reset", reset)
		}
		w.Header().Set("RateLimit-User-Warning", "You have exceeded your API rate limit.")
		writeJSON(w, status, map[string]any{"message": "You have exceeded your API rate limit. Please wait " + reset + " seconds before making more requests.",
			"scope": "rest_user", "limit": DefaultUserLimit, "current": DefaultUserLimit + 1, "reset": int64(f.Reset / time.Second)})
	case status != 0:
		writeJSON(w, status, message("simulated fault"))
	case f.Delay > 0:
		return false
	default:
		writeJSON(w, http.StatusInternalServerError, message("simulated fault"))
	}
	return true
}

func message(m string) map[string]string { return map[string]string{"message": m} }

func writeJSON(w http.ResponseWriter, code int, v any) {
	simhttp.WriteJSON(w, code, v, `{"message":"internal error"}`)
}
