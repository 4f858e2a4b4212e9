package buildkiteapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// token has characters a careless redaction would miss.
const token = "bkua_T0KEN+/=secret"

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answer is what the test server sends for one request.
type answer struct {
	status  int
	file    string // testdata body
	body    string // literal body, when file is ""
	headers map[string]string
	delay   time.Duration
}

// server serves the answers in turn (the last one repeats) and counts
// requests; every request must carry the bearer token.
func server(t *testing.T, answers ...answer) (*httptest.Server, *atomic.Int32, chan *http.Request) {
	t.Helper()
	var n atomic.Int32
	reqs := make(chan *http.Request, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		select {
		case reqs <- r.Clone(context.Background()):
		default:
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write(fixture(t, "error_401.json"))
			return
		}
		a := answers[min(i, len(answers)-1)]
		if a.delay > 0 {
			select {
			case <-time.After(a.delay):
			case <-r.Context().Done():
				return
			}
		}
		for k, v := range a.headers {
			w.Header().Set(k, v)
		}
		body := []byte(a.body)
		if a.file != "" {
			body = fixture(t, a.file)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n, reqs
}

func newClient(t *testing.T, base string, cfg Config) (*Client, *testkit.Clock) {
	t.Helper()
	cfg.BaseURL = base + "/v2"
	c, err := New(cfg, testkit.Token(token), nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := testkit.NewClock(time.Date(2026, 8, 5, 12, 0, 0, 0, time.UTC))
	c.now = clock.Now
	return c, clock
}

// noSecrets fails when anything the client must drop survives in v.
func noSecrets(t *testing.T, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"SECRET", "@buildkite.com", "email", "env", "creator", "command", "webhook_url", "repository", "graphql_id", "agent"} {
		if strings.Contains(string(b), s) {
			t.Errorf("decoded build holds %q: %s", s, b)
		}
	}
}

func TestBuildWithJobs(t *testing.T) {
	srv, _, reqs := server(t, answer{status: 200, file: "get_build_failed.json"})
	c, _ := newClient(t, srv.URL, Config{})
	b, err := c.BuildWithJobs(context.Background(), "my-great-org", "my-pipeline", 3)
	if err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	if r.URL.Path != "/v2/organizations/my-great-org/pipelines/my-pipeline/builds/3" || r.URL.RawQuery != "" {
		t.Errorf("request %s?%s", r.URL.Path, r.URL.RawQuery)
	}
	if r.Header.Get("User-Agent") != UserAgent || r.Method != http.MethodGet {
		t.Errorf("method %s, user agent %q", r.Method, r.Header.Get("User-Agent"))
	}
	if b.Number != 3 || b.State != "failed" || b.Branch != "main" || len(b.Jobs) != 10 {
		t.Fatalf("build %+v with %d jobs", b.Build, len(b.Jobs))
	}
	if b.Message != "Fix flaky test" {
		t.Errorf("message %q: want the subject only", b.Message)
	}
	shard := b.Jobs[4]
	if shard.Name != "RSpec" || shard.State != "failed" || *shard.ExitStatus != 1 ||
		*shard.ParallelGroupIndex != 2 || *shard.ParallelGroupTotal != 4 ||
		shard.WebURL != "https://buildkite.com/my-great-org/my-pipeline/builds/3#b63254c0-3271-4a98-8270-7cfbd6c2f105" {
		t.Errorf("shard %+v", shard)
	}
	if !b.Jobs[7].SoftFailed || b.Pipeline == nil || b.Pipeline.Slug != "great-pipeline" {
		t.Errorf("soft_failed %v, pipeline %+v", b.Jobs[7].SoftFailed, b.Pipeline)
	}
	noSecrets(t, b)
}

func TestBuildDocumentedBody(t *testing.T) {
	srv, _, reqs := server(t, answer{status: 200, file: "get_build.json"})
	c, _ := newClient(t, srv.URL, Config{})
	b, err := c.Build(context.Background(), "my-great-org", "my-pipeline", 2)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-reqs; r.URL.RawQuery != "exclude_jobs=true" {
		t.Errorf("query %q", r.URL.RawQuery)
	}
	if b.ID != "f62a1b4d-10f9-4790-bc1c-e2c3a0c80983" || b.State != "passed" || b.RebuiltFrom == nil || b.RebuiltFrom.Number != 1 ||
		b.FinishedAt.String() != "2015-05-09T21:08:59.874Z" || b.IsPullRequest() {
		t.Errorf("build %+v", b.Build)
	}
	// The pipeline's created_at is in the "2013-09-03 13:24:38 UTC" form:
	// decoding must not trip on it (Pipeline has no such field, but the
	// whole body must decode).
	p := b.Payload("build.finished")
	if p.Event != "build.finished" || p.Build.Number != 2 || p.Job != nil || p.PipelineSlug() != "great-pipeline" || p.OrgSlug() != "my-great-org" {
		t.Errorf("payload %+v", p)
	}
	p.Build.Number = 99
	if b.Number != 2 {
		t.Error("Payload shares the build with the client's result")
	}
	noSecrets(t, p)
}

func TestFinishedBuilds(t *testing.T) {
	srv, _, reqs := server(t, answer{status: 200, file: "list_builds_branch.json"})
	c, _ := newClient(t, srv.URL, Config{})
	list, err := c.FinishedBuilds(context.Background(), "my-great-org", "my-pipeline", "main", 3)
	if err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	q := r.URL.Query()
	if r.URL.Path != "/v2/organizations/my-great-org/pipelines/my-pipeline/builds" || q.Get("branch") != "main" ||
		strings.Join(q["state[]"], ",") != "passed,failed" || q.Get("per_page") != "3" || q.Get("exclude_jobs") != "true" {
		t.Errorf("request %s?%s", r.URL.Path, r.URL.RawQuery)
	}
	var got []int64
	for _, b := range list {
		got = append(got, b.Number)
	}
	if len(got) != 2 || got[0] != 11 || got[1] != 10 {
		t.Errorf("builds %v: want [11 10] (the blocked #12 left out)", got)
	}
	noSecrets(t, list)
}

func TestFinishedBuildsFiltersAndBounds(t *testing.T) {
	tests := []struct {
		name    string
		branch  string
		n       int
		perPage string
		want    int
	}{
		{"documented list body", "main", 0, "1", 1},
		{"another branch's build is not this branch's", "release", 200, "100", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _, reqs := server(t, answer{status: 200, file: "list_builds.json"})
			c, _ := newClient(t, srv.URL, Config{})
			list, err := c.FinishedBuilds(context.Background(), "my-great-org", "my-pipeline", tc.branch, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if r := <-reqs; r.URL.Query().Get("per_page") != tc.perPage {
				t.Errorf("per_page %q, want %q", r.URL.Query().Get("per_page"), tc.perPage)
			}
			if len(list) != tc.want {
				t.Errorf("%d builds, want %d", len(list), tc.want)
			}
		})
	}
}

func TestPathEscaping(t *testing.T) {
	srv, _, reqs := server(t, answer{status: 200, body: "[]"})
	c, _ := newClient(t, srv.URL, Config{})
	if _, err := c.FinishedBuilds(context.Background(), "acme", "a/b?c", "feature/x&y=1", 1); err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	if r.URL.EscapedPath() != "/v2/organizations/acme/pipelines/a%2Fb%3Fc/builds" || r.URL.Query().Get("branch") != "feature/x&y=1" {
		t.Errorf("request %s?%s", r.URL.EscapedPath(), r.URL.RawQuery)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name      string
		answer    answer
		timeout   time.Duration
		want      error
		class     string
		status    int
		inMessage string
	}{
		{"401", answer{status: 401, file: "error_401.json"}, 0, ErrUnauthorized, "unauthorized", 401, "Authentication required"},
		{"403", answer{status: 403, file: "error_403.json"}, 0, ErrUnauthorized, "unauthorized", 403, "Forbidden"},
		{"404", answer{status: 404, file: "error_404.json"}, 0, ErrNotFound, "not_found", 404, "No build found"},
		{"500", answer{status: 500, body: `{"message":"Internal Server Error"}`}, 0, ErrUnavailable, "unavailable", 500, "Internal Server Error"},
		{"502 from a proxy, HTML", answer{status: 502, file: "error_502.html"}, 0, ErrUnavailable, "unavailable", 502, ""},
		{"other 4xx", answer{status: 422, body: `{"message":"Unprocessable"}`}, 0, ErrMalformed, "malformed", 422, "Unprocessable"},
		{"redirect not followed", answer{status: 302, headers: map[string]string{"Location": "https://elsewhere.example/"}}, 0, ErrMalformed, "malformed", 302, ""},
		{"malformed JSON", answer{status: 200, file: "malformed.json"}, 0, ErrMalformed, "malformed", 0, ""},
		{"JSON of the wrong shape", answer{status: 200, body: `["not","a","build"]`}, 0, ErrMalformed, "malformed", 0, ""},
		{"slow answer", answer{status: 200, file: "get_build.json", delay: 2 * time.Second}, 100 * time.Millisecond, ErrUnavailable, "timeout", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, n, _ := server(t, tc.answer)
			c, _ := newClient(t, srv.URL, Config{Timeout: tc.timeout})
			start := time.Now()
			b, err := c.Build(context.Background(), "my-great-org", "my-pipeline", 2)
			if !errors.Is(err, tc.want) || b != nil {
				t.Fatalf("err %v, build %v; want %v", err, b, tc.want)
			}
			if got := Class(err); got != tc.class {
				t.Errorf("Class %q, want %q", got, tc.class)
			}
			var se *StatusError
			if errors.As(err, &se) != (tc.status != 0) || (se != nil && se.Status != tc.status) {
				t.Errorf("status error %+v, want status %d", se, tc.status)
			}
			if !strings.Contains(err.Error(), tc.inMessage) || !strings.Contains(err.Error(), "my-great-org/my-pipeline #2") {
				t.Errorf("error %q: want %q and the build named", err, tc.inMessage)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "T0KEN") {
				t.Errorf("error holds the token: %v", err)
			}
			if d := time.Since(start); tc.timeout > 0 && d > tc.timeout+time.Second {
				t.Errorf("took %s with a %s timeout", d, tc.timeout)
			}
			if n.Load() != 1 {
				t.Errorf("%d requests, want 1 (no retries inside the client)", n.Load())
			}
		})
	}
}

func TestCallerDeadline(t *testing.T) {
	srv, _, _ := server(t, answer{status: 200, file: "get_build.json", delay: 2 * time.Second})
	c, _ := newClient(t, srv.URL, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.BuildWithJobs(ctx, "o", "p", 1)
	if !errors.Is(err, context.DeadlineExceeded) || Class(err) != "timeout" {
		t.Fatalf("err %v (class %s), want a timeout", err, Class(err))
	}
}

func TestBodyBound(t *testing.T) {
	srv, _, _ := server(t, answer{status: 200, file: "get_build_failed.json"})
	c, _ := newClient(t, srv.URL, Config{MaxBody: 4096})
	_, err := c.BuildWithJobs(context.Background(), "o", "p", 3)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "larger than 4096 bytes") {
		t.Fatalf("err %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name      string
		headers   map[string]string
		body      string
		wantWait  time.Duration
		wantScope string
	}{
		{"documented 429: both windows' headers, the longer wins",
			map[string]string{"RateLimit-Scope": "rest", "RateLimit-Remaining": "80", "RateLimit-Limit": "200", "RateLimit-Reset": "12",
				"RateLimit-User-Scope": "rest_user", "RateLimit-User-Remaining": "0", "RateLimit-User-Limit": "50", "RateLimit-User-Reset": "42",
				"RateLimit-User-Warning": "You have exceeded your API rate limit."},
			"error_429.json", 42 * time.Second, "rest_user"},
		{"organization window only", map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": "7"},
			`{"message":"x","scope":"rest","reset":7}`, 7 * time.Second, "rest"},
		{"no headers: the body's reset", nil, `{"scope":"rest","reset":30}`, 30 * time.Second, "rest"},
		{"nothing said: a minute, the window's length", nil, `oops`, time.Minute, ""},
		{"an unknown scope word is not repeated", map[string]string{"RateLimit-Reset": "5"}, `{"scope":"<script>"}`, 5 * time.Second, ""},
		{"an absurd reset is capped", map[string]string{"RateLimit-Reset": "99999999"}, `{}`, time.Hour, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := answer{status: 429, headers: tc.headers, body: tc.body}
			if strings.HasSuffix(tc.body, ".json") {
				a.body, a.file = "", tc.body
			}
			srv, n, _ := server(t, a, answer{status: 200, file: "get_build.json"})
			c, clock := newClient(t, srv.URL, Config{})
			ctx := context.Background()
			_, err := c.Build(ctx, "o", "p", 2)
			var rl *RateLimitError
			if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) || Class(err) != "rate_limited" {
				t.Fatalf("err %v, want a *RateLimitError", err)
			}
			if want := clock.Now().Add(tc.wantWait); !rl.Reset.Equal(want) || rl.Scope != tc.wantScope || rl.Local {
				t.Errorf("reset %s scope %q local %v, want %s %q", rl.Reset, rl.Scope, rl.Local, want, tc.wantScope)
			}
			// Until the reset, the client refuses without asking.
			clock.Advance(tc.wantWait - time.Second)
			_, err = c.Build(ctx, "o", "p", 2)
			if !errors.As(err, &rl) || !rl.Local || n.Load() != 1 {
				t.Fatalf("before the reset: err %v, %d requests; want a local refusal", err, n.Load())
			}
			clock.Advance(time.Second)
			if _, err := c.Build(ctx, "o", "p", 2); err != nil || n.Load() != 2 {
				t.Fatalf("after the reset: err %v, %d requests", err, n.Load())
			}
		})
	}
}

func TestExhaustedWindowOnSuccess(t *testing.T) {
	srv, n, _ := server(t, answer{status: 200, file: "get_build.json",
		headers: map[string]string{"RateLimit-Remaining": "3", "RateLimit-Reset": "20", "RateLimit-User-Remaining": "0", "RateLimit-User-Reset": "15"}})
	c, clock := newClient(t, srv.URL, Config{})
	if _, err := c.Build(context.Background(), "o", "p", 2); err != nil {
		t.Fatal(err)
	}
	_, err := c.Build(context.Background(), "o", "p", 2)
	var rl *RateLimitError
	if !errors.As(err, &rl) || !rl.Local || rl.Scope != "rest_user" || !rl.Reset.Equal(clock.Now().Add(15*time.Second)) || n.Load() != 1 {
		t.Fatalf("err %v, %d requests: the last call of the window should stop the next", err, n.Load())
	}
}

func TestTokenProblems(t *testing.T) {
	srv, n, _ := server(t, answer{status: 200, file: "get_build.json"})
	tests := []struct {
		name string
		src  TokenSource
		want error
	}{
		{"secret unavailable", testkit.TokenError{Err: errors.New("secret unavailable: arn:…")}, ErrUnavailable},
		{"empty token", testkit.Token(""), ErrNoToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{BaseURL: srv.URL}, tc.src, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Build(context.Background(), "o", "p", 1); !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
		})
	}
	if n.Load() != 0 {
		t.Errorf("%d requests made without a token", n.Load())
	}
	t.Run("wrong token", func(t *testing.T) {
		c, _ := New(Config{BaseURL: srv.URL + "/v2"}, testkit.Token("wrong-"+token), nil)
		_, err := c.Build(context.Background(), "o", "p", 1)
		if !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), token) {
			t.Errorf("err %v", err)
		}
	})
}

func TestNew(t *testing.T) {
	tests := []struct {
		url     string
		wantErr string
	}{
		{"", ""},
		{"http://127.0.0.1:8082/v2/", ""},
		{"ftp://api.buildkite.com/v2", "absolute http"},
		{"/v2", "absolute http"},
		{"https://user:" + url.QueryEscape(token) + "@api.buildkite.com/v2", "must not hold credentials"},
		{"https://user:" + token + "@api.buildkite.com/v2", "not a valid URL"},
		{"https://api.buildkite.com/v2?token=" + token, "query"},
		{"https://api.buildkite.com/%zz" + token, "not a valid URL"},
	}
	for _, tc := range tests {
		c, err := New(Config{BaseURL: tc.url}, testkit.Token(token), nil)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.url, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: err %v, want %q", tc.url, err, tc.wantErr)
		case err != nil && strings.Contains(err.Error(), "T0KEN"):
			t.Errorf("%q: error holds the token: %v", tc.url, err)
		case tc.url == "" && c.base.String() != DefaultBaseURL:
			t.Errorf("default base %s", c.base)
		}
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("no token source accepted")
	}
	if _, err := New(Config{Timeout: -1}, testkit.Token(""), nil); err == nil {
		t.Error("negative timeout accepted")
	}
}

func TestArguments(t *testing.T) {
	c, _ := newClient(t, "http://127.0.0.1:1", Config{})
	if _, err := c.Build(context.Background(), "o", "p", 0); err == nil {
		t.Error("build number 0 accepted")
	}
	if _, err := c.FinishedBuilds(context.Background(), "o", "p", "", 1); err == nil {
		t.Error("empty branch accepted")
	}
}

func TestCheckOrg(t *testing.T) {
	tests := []struct {
		answer answer
		want   error
	}{
		{answer{status: 200, file: "list_builds.json"}, nil},
		{answer{status: 200, body: "[]"}, nil},
		{answer{status: 404, body: `{"message":"No organization found"}`}, ErrNotFound},
		{answer{status: 403, file: "error_403.json"}, ErrUnauthorized},
	}
	for _, tc := range tests {
		srv, _, reqs := server(t, tc.answer)
		c, _ := newClient(t, srv.URL, Config{})
		err := c.CheckOrg(context.Background(), "acme")
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%d: err %v, want %v", tc.answer.status, err, tc.want)
		}
		if r := <-reqs; r.URL.Path != "/v2/organizations/acme/builds" || r.URL.RawQuery != "exclude_jobs=true&exclude_pipeline=true&per_page=1" {
			t.Errorf("request %s?%s", r.URL.Path, r.URL.RawQuery)
		}
	}
}

// The functions' cached secret is the client's token source.
var _ TokenSource = (*secret.Source)(nil)
