package buildkitesim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

const token = "sim-api-token"

func newSim(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s := New(token)
	ts := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); ts.Close() })
	return s, ts
}

func client(t *testing.T, ts *httptest.Server, cfg buildkiteapi.Config) *buildkiteapi.Client {
	t.Helper()
	cfg.BaseURL = ts.URL + "/v2"
	c, err := buildkiteapi.New(cfg, testkit.Token(token), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// webhook is a fixture of internal/buildkite/testdata with mod applied.
func webhook(t *testing.T, name string, mod ...func(*buildkite.Payload)) *buildkite.Payload {
	t.Helper()
	p := testkit.Webhook(t, name)
	for _, m := range mod {
		m(p)
	}
	return p
}

func number(n int64, state string) func(*buildkite.Payload) {
	return func(p *buildkite.Payload) {
		p.Build.Number, p.Build.State, p.Build.ID = n, state, fmt.Sprintf("build-%d", n)
		p.Build.WebURL = fmt.Sprintf("https://buildkite.com/acme/deploy-api/builds/%d", n)
		p.Build.URL = ""
	}
}

// get makes a raw request and decodes the JSON answer into a generic value.
func get(t *testing.T, url, auth string) (int, http.Header, any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, resp.Header, v
}

func TestRecordAndGetWithJobs(t *testing.T) {
	s, ts := newSim(t)
	s.Record(webhook(t, "build_finished_failed.json"))
	s.Record(webhook(t, "job_finished_failed.json")) // arrives after the build's outcome, carrying "failing"
	b, err := client(t, ts, buildkiteapi.Config{}).BuildWithJobs(context.Background(), "acme", "deploy-api", 1234)
	if err != nil {
		t.Fatal(err)
	}
	if b.State != "failed" || b.Branch != "main" || b.Message != "Fix flaky test" || b.Pipeline == nil || b.Pipeline.DefaultBranch != "main" {
		t.Errorf("build %+v pipeline %+v", b.Build, b.Pipeline)
	}
	if len(b.Jobs) != 1 || b.Jobs[0].Name != ":go: test" || b.Jobs[0].State != "failed" || *b.Jobs[0].ExitStatus != 1 ||
		b.Jobs[0].WebURL != "https://buildkite.com/acme/deploy-api/builds/1234#0191225a-3a40-7c7f-8e21-6b9d2f4c1a07" {
		t.Errorf("jobs %+v", b.Jobs)
	}
	if s.Calls() != 1 {
		t.Errorf("calls %d", s.Calls())
	}
}

func TestRetriedJobs(t *testing.T) {
	s, ts := newSim(t)
	s.Record(webhook(t, "job_finished_failed.json"))
	s.Record(webhook(t, "job_finished_passed_retry.json"))
	b, err := client(t, ts, buildkiteapi.Config{}).BuildWithJobs(context.Background(), "acme", "deploy-api", 1234)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Jobs) != 1 || b.Jobs[0].State != "passed" || b.Jobs[0].RetrySource == nil {
		t.Errorf("default: %+v, want only the retry", b.Jobs)
	}
	_, _, v := get(t, ts.URL+"/v2/organizations/acme/pipelines/deploy-api/builds/1234?include_retried_jobs=true", "Bearer "+token)
	jobs := v.(map[string]any)["jobs"].([]any)
	if len(jobs) != 2 || jobs[0].(map[string]any)["retried"] != true {
		t.Errorf("include_retried_jobs: %v", jobs)
	}
}

func TestList(t *testing.T) {
	s, ts := newSim(t)
	s.Record(webhook(t, "build_finished_failed.json", number(1, "failed")))
	s.Record(webhook(t, "build_finished_passed.json", number(2, "passed")))
	s.Record(webhook(t, "build_finished_blocked.json", number(3, "passed")))
	s.Record(webhook(t, "build_finished_canceled.json", number(4, "canceled")))
	s.Record(webhook(t, "build_finished_failed.json", number(5, "failed")))
	s.Record(webhook(t, "build_finished_feature_branch.json", number(6, "failed")))
	base := ts.URL + "/v2/organizations/acme/pipelines/deploy-api/builds"
	tests := []struct {
		query string
		want  []float64
	}{
		{"", []float64{6, 5, 4, 3, 2, 1}},
		{"?branch=main&state[]=passed&state[]=failed", []float64{5, 2, 1}},
		{"?branch=main&state=finished", []float64{5, 4, 3, 2, 1}},
		{"?state=blocked", []float64{3}},
		{"?branch[]=feature/x&branch[]=main&state=failed", []float64{6, 5, 1}},
		{"?branch=main&per_page=2", []float64{5, 4}},
		{"?branch=main&per_page=2&page=3", []float64{1}},
		{"?branch=main&per_page=2&page=9", nil},
		{"?branch=release", nil},
	}
	for _, tc := range tests {
		code, _, v := get(t, base+tc.query, "Bearer "+token)
		var got []float64
		for _, b := range v.([]any) {
			got = append(got, b.(map[string]any)["number"].(float64))
		}
		if code != 200 || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %d %v, want %v", tc.query, code, got, tc.want)
		}
	}
	_, _, v := get(t, base+"?exclude_jobs=true&exclude_pipeline=true&per_page=1", "Bearer "+token)
	b := v.([]any)[0].(map[string]any)
	if _, ok := b["jobs"]; ok {
		t.Error("exclude_jobs: jobs listed")
	}
	if _, ok := b["pipeline"]; ok {
		t.Error("exclude_pipeline: pipeline listed")
	}
	// The client's FinishedBuilds leaves the blocked #3 out on its side too.
	list, err := client(t, ts, buildkiteapi.Config{}).FinishedBuilds(context.Background(), "acme", "deploy-api", "main", 5)
	if err != nil || len(list) != 3 || list[0].Number != 5 {
		t.Errorf("FinishedBuilds: %d builds, %v", len(list), err)
	}
	code, _, _ := get(t, ts.URL+"/v2/organizations/acme/builds?per_page=1", "Bearer "+token)
	if err := client(t, ts, buildkiteapi.Config{}).CheckOrg(context.Background(), "acme"); err != nil || code != 200 {
		t.Errorf("organization list: %d, %v", code, err)
	}
}

// keys returns the keys of a JSON object.
func keys(v any) []string {
	return slices.Sorted(maps.Keys(v.(map[string]any)))
}

// TestShapeMatchesDocs compares the simulator's answer with the documented
// "Get a build" and "List builds for a pipeline" bodies key by key.
func TestShapeMatchesDocs(t *testing.T) {
	var docGet, docList any
	for name, v := range map[string]*any{"get_build.json": &docGet, "list_builds.json": &docList} {
		raw, err := os.ReadFile("../../buildkiteapi/testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
	}
	s, ts := newSim(t)
	s.Record(webhook(t, "build_finished_failed.json"))
	s.Record(webhook(t, "job_finished_failed.json"))
	_, _, got := get(t, ts.URL+"/v2/organizations/acme/pipelines/deploy-api/builds/1234", "Bearer "+token)
	_, _, gotList := get(t, ts.URL+"/v2/organizations/acme/pipelines/deploy-api/builds", "Bearer "+token)

	listed := docList.([]any)[0].(map[string]any)
	// author and triggered_from are in webhooks and Buildkite's Go client,
	// signal_reason in the docs' job table; none is in these examples.
	extra := []string{"author", "triggered_from", "signal_reason"}
	for _, c := range []struct {
		what           string
		got, doc, also any
	}{
		{"build", got, docGet, nil},
		{"listed build", gotList.([]any)[0], listed, nil},
		{"job", got.(map[string]any)["jobs"].([]any)[0], docGet.(map[string]any)["jobs"].([]any)[0], nil},
		{"pipeline", got.(map[string]any)["pipeline"], docGet.(map[string]any)["pipeline"], listed["pipeline"]},
	} {
		g, d := keys(c.got), keys(c.doc)
		allowed := append(slices.Clone(d), extra...)
		if c.also != nil {
			allowed = append(allowed, keys(c.also)...)
		}
		for _, k := range d {
			if !slices.Contains(g, k) {
				t.Errorf("%s: documented key %q missing", c.what, k)
			}
		}
		for _, k := range g {
			if !slices.Contains(allowed, k) {
				t.Errorf("%s: key %q is in no documented example", c.what, k)
			}
		}
	}
	if b := got.(map[string]any); b["finished_at"] != "2024-08-05T12:00:00.000Z" || b["pull_request"] == nil || b["rebuilt_from"] != nil {
		t.Errorf("values: finished_at %v pull_request %v rebuilt_from %v", b["finished_at"], b["pull_request"], b["rebuilt_from"])
	}
}

func TestAuth(t *testing.T) {
	s, ts := newSim(t)
	s.Record(webhook(t, "build_finished_failed.json"))
	u := ts.URL + "/v2/organizations/acme/pipelines/deploy-api/builds/1234"
	for _, auth := range []string{"", "Bearer wrong", "Basic " + token, token} {
		code, _, v := get(t, u, auth)
		if code != 401 || !strings.HasPrefix(v.(map[string]any)["message"].(string), "Authentication required") {
			t.Errorf("%q: %d %v", auth, code, v)
		}
	}
	if s.Calls() != 0 {
		t.Errorf("unauthorized requests counted: %d", s.Calls())
	}
	closed := New("")
	srv := httptest.NewServer(closed)
	defer srv.Close()
	if code, _, _ := get(t, srv.URL+"/v2/organizations/acme/builds", "Bearer "); code != 401 {
		t.Errorf("an empty configured token authorized a call: %d", code)
	}
}

func TestNotFound(t *testing.T) {
	s, ts := newSim(t)
	s.Record(webhook(t, "build_finished_failed.json"))
	c := client(t, ts, buildkiteapi.Config{})
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"unknown build", func() error { _, err := c.Build(ctx, "acme", "deploy-api", 9); return err }, "No build found"},
		{"unknown pipeline", func() error { _, err := c.FinishedBuilds(ctx, "acme", "web", "main", 1); return err }, "No pipeline found"},
		{"unknown organization", func() error { return c.CheckOrg(ctx, "umbrella") }, "No organization found"},
		{"forgotten pipeline", func() error {
			s.Forget("acme", "deploy-api")
			_, err := c.FinishedBuilds(ctx, "acme", "deploy-api", "main", 1)
			return err
		}, "No pipeline found"},
	}
	for _, tc := range tests {
		if err := tc.call(); !errors.Is(err, buildkiteapi.ErrNotFound) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a 404 %q", tc.name, err, tc.want)
		}
	}
	s.Record(webhook(t, "build_finished_passed.json"))
	if _, err := c.Build(ctx, "acme", "deploy-api", 1234); err != nil {
		t.Errorf("a webhook of a forgotten pipeline brings it back: %v", err)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name    string
		fault   Fault
		timeout time.Duration
		want    error
		class   string
	}{
		{"429 with reset headers", Fault{Reset: 30 * time.Second}, 0, buildkiteapi.ErrRateLimited, "rate_limited"},
		{"500", Fault{Status: 500}, 0, buildkiteapi.ErrUnavailable, "unavailable"},
		{"403", Fault{Status: 403}, 0, buildkiteapi.ErrUnauthorized, "unauthorized"},
		{"slow past the client's timeout", Fault{Delay: 2 * time.Second}, 100 * time.Millisecond, buildkiteapi.ErrUnavailable, "timeout"},
		{"slow but in time: served as usual", Fault{Delay: 50 * time.Millisecond}, time.Second, nil, ""},
		{"malformed JSON", Fault{Malformed: true}, 0, buildkiteapi.ErrMalformed, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ts := newSim(t)
			s.Record(webhook(t, "build_finished_failed.json"))
			s.Record(webhook(t, "build_finished_failed.json", func(p *buildkite.Payload) {
				p.Pipeline.Slug, p.Pipeline.WebURL = "web", "https://buildkite.com/acme/web"
			}))
			var mu sync.Mutex
			var seen []Request
			s.SetFault(func(_ int, r Request) *Fault {
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, r)
				if r.Pipeline == "deploy-api" {
					f := tc.fault
					return &f
				}
				return nil
			})
			c := client(t, ts, buildkiteapi.Config{Timeout: tc.timeout})
			start := time.Now()
			_, err := c.FinishedBuilds(context.Background(), "acme", "deploy-api", "main", 1)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) || buildkiteapi.Class(err) != tc.class {
				t.Fatalf("err %v (class %s), want %v", err, buildkiteapi.Class(err), tc.want)
			}
			if tc.timeout > 0 && time.Since(start) > tc.timeout+time.Second {
				t.Errorf("took %s", time.Since(start))
			}
			var rl *buildkiteapi.RateLimitError
			if errors.As(err, &rl) && (time.Until(rl.Reset) < 25*time.Second || rl.Scope != "rest_user") {
				t.Errorf("reset %s scope %q", time.Until(rl.Reset), rl.Scope)
			}
			mu.Lock()
			if len(seen) != 1 || seen[0] != (Request{Org: "acme", Pipeline: "deploy-api", Branch: "main"}) {
				t.Errorf("hook saw %+v", seen)
			}
			mu.Unlock()
			if tc.class != "rate_limited" {
				if _, err := c.FinishedBuilds(context.Background(), "acme", "web", "main", 1); err != nil {
					t.Errorf("another pipeline: %v", err)
				}
			}
		})
	}
}

func TestRateLimitWindow(t *testing.T) {
	s, ts := newSim(t)
	clock := testkit.NewClock(time.Date(2026, 8, 5, 12, 0, 0, 0, time.UTC))
	s.SetClock(clock.Now)
	s.SetLimits(5, 3)
	s.Record(webhook(t, "build_finished_failed.json"))
	u := ts.URL + "/v2/organizations/acme/pipelines/deploy-api/builds/1234?exclude_jobs=true"
	for i, want := range []string{"2", "1", "0"} {
		code, h, _ := get(t, u, "Bearer "+token)
		if code != 200 || h.Get("RateLimit-User-Remaining") != want || h.Get("RateLimit-Remaining") != fmt.Sprint(4-i) ||
			h.Get("RateLimit-User-Limit") != "3" || h.Get("RateLimit-Scope") != "rest" || h.Get("RateLimit-Reset") != fmt.Sprint(60-10*i) {
			t.Errorf("call %d: %d %v", i+1, code, h)
		}
		clock.Advance(10 * time.Second)
	}
	code, h, v := get(t, u, "Bearer "+token)
	body := v.(map[string]any)
	if code != 429 || body["scope"] != "rest_user" || body["limit"] != 3.0 || body["current"] != 4.0 || body["reset"] != 30.0 ||
		h.Get("RateLimit-User-Warning") == "" || h.Get("RateLimit-User-Reset") != "30" {
		t.Errorf("over the limit: %d %v %v", code, h, body)
	}
	clock.Advance(30 * time.Second)
	if code, h, _ := get(t, u, "Bearer "+token); code != 200 || h.Get("RateLimit-User-Remaining") != "2" {
		t.Errorf("a new window: %d %v", code, h)
	}

	// The client stops by itself after the window's last call.
	c := client(t, ts, buildkiteapi.Config{})
	before := s.Calls()
	for range 4 {
		_, err := c.Build(context.Background(), "acme", "deploy-api", 1234)
		var rl *buildkiteapi.RateLimitError
		if errors.As(err, &rl) && !rl.Local {
			t.Errorf("the client went past the window: %v", err)
		}
	}
	if n := s.Calls() - before; n != 2 {
		t.Errorf("the client made %d calls in a window with 2 left", n)
	}
}

// POST /_sim/webhooks teaches the simulator a build no webhook announced.
func TestRecordRoute(t *testing.T) {
	_, ts := newSim(t)
	body := testkit.Fixture(t, "build_finished_passed.json")
	for _, c := range []struct {
		name, auth, body string
		code             int
	}{
		{"no token", "", string(body), 401},
		{"wrong token", "Bearer nope", string(body), 401},
		{"not a webhook", "Bearer " + token, `{"event":"ping"}`, 422},
		{"recorded", "Bearer " + token, string(body), 200},
	} {
		req, _ := http.NewRequest("POST", ts.URL+"/_sim/webhooks", strings.NewReader(c.body))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.code)
		}
	}
	if code, _, b := get(t, ts.URL+"/v2/organizations/acme/pipelines/deploy-api/builds/1234", "Bearer "+token); code != 200 || b.(map[string]any)["state"] != "passed" {
		t.Errorf("the recorded build: %d %v", code, b)
	}
}

func TestRoutes(t *testing.T) {
	_, ts := newSim(t)
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/", 200},
		{"GET", "/v2/nope", 404},
		{"GET", "/organizations/acme/pipelines/x/builds/abc", 404},
		{"POST", "/v2/organizations/acme/pipelines/x/builds", 405},
	} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
	}
}
