package sqibssim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const token = "test-sqibs-token"

// ev builds the bridge's payload shape (DESIGN §5).
func ev(id, status, desc string) string {
	return fmt.Sprintf(`{"event":{"id":%q,"status":%q,"severity":"high","description":%q,"host":"buildkite.com/acme/api","timestamp":"2024-08-05T12:00:00.000Z"}}`,
		id, status, desc)
}

type reply struct {
	code int
	res  Result
	raw  string
}

// post sends body to the process endpoint with the Bearer token.
func post(t *testing.T, base, query, body string) reply {
	t.Helper()
	return do(t, base+"/v1/process"+query, body, map[string]string{
		"Authorization": "Bearer " + token,
		"Content-Type":  "application/json",
	})
}

func do(t *testing.T, u, body string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{code: resp.StatusCode, raw: string(raw)}
	if resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, &r.res); err != nil {
			t.Fatalf("answer %d is not a SQIBS result: %q", resp.StatusCode, raw)
		}
	}
	return r
}

func newSim(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s := New(token)
	ts := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); ts.Close() })
	return s, ts
}

func TestProcess(t *testing.T) {
	type step struct {
		body, contentType     string
		code                  int
		created, trigDup      bool
		resolved, resolvedDup bool
	}
	// want describes Incidents() afterwards as "id:status:triggers".
	tests := []struct {
		name  string
		steps []step
		want  []string
	}{
		{"FAILED opens", []step{{body: ev("a", "FAILED", "d"), code: 201, created: true}}, []string{"a:open:1"}},
		{"ERROR opens", []step{{body: ev("a", "ERROR", "d"), code: 201, created: true}}, []string{"a:open:1"}},
		{"word inside status opens", []step{{body: ev("a", "BUILD_FAILED", "d"), code: 201, created: true}}, []string{"a:open:1"}},
		{"second trigger is a duplicate", []step{
			{body: ev("a", "FAILED", "d"), code: 201, created: true},
			{body: ev("a", "ERROR", "d"), code: 200, trigDup: true},
		}, []string{"a:open:2"}},
		{"PASSED resolves", []step{
			{body: ev("a", "FAILED", "d"), code: 201, created: true},
			{body: ev("a", "PASSED", "d"), code: 200, resolved: true},
		}, []string{"a:resolved:1"}},
		{"FIXED resolves", []step{
			{body: ev("a", "ERROR", "d"), code: 201, created: true},
			{body: ev("a", "FIXED", "d"), code: 200, resolved: true},
		}, []string{"a:resolved:1"}},
		{"resolve with nothing open", []step{{body: ev("a", "PASSED", "d"), code: 200}}, nil},
		{"repeated resolve is a duplicate", []step{
			{body: ev("a", "FAILED", "d"), code: 201, created: true},
			{body: ev("a", "PASSED", "d"), code: 200, resolved: true},
			{body: ev("a", "PASSED", "d"), code: 200, resolvedDup: true},
		}, []string{"a:resolved:1"}},
		{"trigger after resolve opens a new record", []step{
			{body: ev("a", "FAILED", "d"), code: 201, created: true},
			{body: ev("a", "PASSED", "d"), code: 200, resolved: true},
			{body: ev("a", "FAILED", "d"), code: 201, created: true},
		}, []string{"a:resolved:1", "a:open:1"}},
		{"ids are independent", []step{
			{body: ev("a", "FAILED", "d"), code: 201, created: true},
			{body: ev("b", "FAILED", "d"), code: 201, created: true},
			{body: ev("b", "PASSED", "d"), code: 200, resolved: true},
		}, []string{"a:open:1", "b:resolved:1"}},
		{"neither word", []step{{body: ev("a", "RUNNING", "d"), code: 202}}, nil},
		{"lower case does not match", []step{{body: ev("a", "failed", "d"), code: 202}}, nil},
		{"status missing", []step{{body: `{"event":{"id":"a","description":"d"}}`, code: 202}}, nil},
		{"top-level status is not the key", []step{{body: `{"id":"a","status":"FAILED"}`, code: 202}}, nil},
		{"event not an object", []step{{body: `{"event":"FAILED"}`, code: 202}}, nil},
		{"not JSON", []step{{body: `status=FAILED`, code: 202}}, nil},
		{"empty body", []step{{body: ``, code: 202}}, nil},
		{"unsupported content type is an empty payload", []step{{body: ev("a", "FAILED", "d"), contentType: "image/png", code: 202}}, nil},
		{"text content type is read", []step{{body: ev("a", "FAILED", "d"), contentType: "text/plain", code: 201, created: true}}, []string{"a:open:1"}},
		{"trigger without id is never a duplicate", []step{
			{body: `{"event":{"status":"FAILED"}}`, code: 201, created: true},
			{body: `{"event":{"status":"FAILED"}}`, code: 201, created: true},
		}, []string{":open:1", ":open:1"}},
		{"numeric id is mapped by its text", []step{
			{body: `{"event":{"id":42,"status":"FAILED"}}`, code: 201, created: true},
			{body: `{"event":{"id":42,"status":"PASSED"}}`, code: 200, resolved: true},
		}, []string{"42:resolved:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			for i, st := range tt.steps {
				ct := st.contentType
				if ct == "" {
					ct = "application/json"
				}
				r := do(t, ts.URL+"/v1/process", st.body, map[string]string{"Authorization": "Bearer " + token, "Content-Type": ct})
				if r.code != st.code {
					t.Fatalf("step %d: status %d, want %d (%s)", i, r.code, st.code, r.raw)
				}
				got := [4]bool{r.res.Triggered.Created, r.res.Triggered.Duplicate, r.res.Resolved.Resolved, r.res.Resolved.Duplicate}
				want := [4]bool{st.created, st.trigDup, st.resolved, st.resolvedDup}
				if got != want {
					t.Errorf("step %d: created,trigDup,resolved,resolvedDup = %v, want %v", i, got, want)
				}
				if r.res.ID == "" {
					t.Errorf("step %d: empty call id", i)
				}
			}
			var got []string
			for _, in := range s.Incidents() {
				got = append(got, fmt.Sprintf("%s:%s:%d", in.ID, in.Status, in.Triggers))
				if (in.Status == StatusResolved) != (in.ResolvedAt != nil) {
					t.Errorf("incident %q: status %s with resolved_at %v", in.ID, in.Status, in.ResolvedAt)
				}
				if in.ResolvedAt != nil && in.ResolvedAt.Before(in.OpenedAt) {
					t.Errorf("incident %q resolved before it opened", in.ID)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("incidents %q, want %q", got, tt.want)
			}
			if s.Calls() != len(tt.steps) {
				t.Errorf("Calls() = %d, want %d", s.Calls(), len(tt.steps))
			}
		})
	}
}

func TestOpenAndDescription(t *testing.T) {
	s, ts := newSim(t)
	body := ev("acme/api/main", "FAILED", "api #1 failed")
	post(t, ts.URL, "", body)
	in, ok := s.Open("acme/api/main")
	if !ok {
		t.Fatal("Open: not found after a trigger")
	}
	if in.Description != body || in.Severity != "high" || in.Status != StatusOpen {
		t.Errorf("incident = %+v", in)
	}
	post(t, ts.URL, "", ev("acme/api/main", "PASSED", "api #2 passed"))
	if _, ok := s.Open("acme/api/main"); ok {
		t.Error("Open: still open after the resolve")
	}
}

func TestTitle(t *testing.T) {
	tests := []struct {
		query, body, want string
	}{
		{"?from=Buildkite", ev("a", "FAILED", "api #1 failed"), "Buildkite - api #1 failed"},
		{"", ev("a", "FAILED", "api #1 failed"), "api #1 failed"},
		{"?from=", ev("a", "FAILED", "api #1 failed"), "api #1 failed"},
		{"?from=Buildkite", `{"event":{"id":"a","status":"FAILED"}}`, "Incident from Buildkite"},
		{"", `{"event":{"id":"a","status":"FAILED"}}`, "Incident from unknown source"},
		{"?from=" + url.QueryEscape("CI & co"), ev("a", "FAILED", "x"), "CI & co - x"},
	}
	for _, tt := range tests {
		t.Run(tt.query+" "+tt.want, func(t *testing.T) {
			s, ts := newSim(t)
			if r := post(t, ts.URL, tt.query, tt.body); r.code != 201 {
				t.Fatalf("status %d: %s", r.code, r.raw)
			}
			if in, _ := s.Open("a"); in.Title != tt.want {
				t.Errorf("title %q, want %q", in.Title, tt.want)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	body := ev("a", "FAILED", "d")
	tests := []struct {
		name   string
		server string // configured token
		query  string
		auth   string
		code   int
	}{
		{"bearer", token, "", "Bearer " + token, 201},
		{"bearer scheme any case", token, "", "bearer " + token, 201},
		{"query token", token, "?token=" + token, "", 201},
		{"query token with from", token, "?from=Buildkite&token=" + token, "", 201},
		{"no token", token, "", "", 401},
		{"wrong bearer", token, "", "Bearer nope", 401},
		{"token prefix", token, "", "Bearer " + token[:len(token)-1], 401},
		{"wrong scheme", token, "", "Basic " + token, 401},
		{"bare token header", token, "", token, 401},
		{"wrong query token", token, "?token=nope", "", 401},
		{"empty configured token accepts nothing", "", "?token=", "Bearer ", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(tt.server)
			ts := httptest.NewServer(s)
			defer ts.Close()
			hdr := map[string]string{"Content-Type": "application/json"}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			r := do(t, ts.URL+"/sqibs-api/v1/process"+tt.query, body, hdr)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d (%s)", r.code, tt.code, r.raw)
			}
			if tt.code == 401 {
				if strings.TrimSpace(r.raw) != `{"error":"unauthorized"}` {
					t.Errorf("401 body %q", r.raw)
				}
				if s.Calls() != 0 || len(s.Incidents()) != 0 {
					t.Errorf("unauthorized call was processed")
				}
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	_, ts := newSim(t)
	tests := []struct {
		method, path string
		code         int
		allow        string
	}{
		{"POST", "/v1/process", 201, ""},
		{"POST", "/sqibs-api/v1/process", 200, ""}, // same id: duplicate
		{"GET", "/v1/process", 405, "POST"},
		{"PUT", "/sqibs-api/v1/process", 405, "POST"},
		{"GET", "/incidents", 200, ""},
		{"HEAD", "/incidents", 200, ""},
		{"POST", "/incidents", 405, "GET, HEAD"},
		{"GET", "/", 200, ""},
		{"DELETE", "/", 405, "GET, HEAD"},
		{"GET", "/dead-letters", 404, ""}, // no source set: the bridge's DLQ is SQS
		{"POST", "/dead-letters", 405, "GET, HEAD"},
		{"GET", "/history", 200, ""},
		{"HEAD", "/history", 200, ""},
		{"POST", "/history", 405, "GET, HEAD"},
		{"GET", "/reset", 405, "POST"},
		{"HEAD", "/reset", 405, "POST"},
		{"GET", "/nope", 404, ""},
		{"POST", "/v1/process/", 404, ""},
		{"POST", "/v1/processes", 404, ""},
		{"POST", "/v1/request", 404, ""},
		{"POST", "/reset/", 404, ""},
		{"POST", "/reset", 303, ""}, // last: it empties the simulator
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, ts.URL+tt.path, strings.NewReader(ev("a", "FAILED", "d")))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.code)
			}
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	tests := []struct {
		size int
		code int
	}{
		{MaxBodyBytes, 202},
		{MaxBodyBytes + 1, 413},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			s, ts := newSim(t)
			// A JSON string padded to size bytes, so only its size decides.
			body := `"` + strings.Repeat("x", tt.size-2) + `"`
			r := post(t, ts.URL, "", body)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d", r.code, tt.code)
			}
			wantCalls := 0
			if tt.code < 300 {
				wantCalls = 1
			}
			if s.Calls() != wantCalls {
				t.Errorf("Calls() = %d, want %d", s.Calls(), wantCalls)
			}
		})
	}
}

func getBody(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestIncidentsJSON(t *testing.T) {
	_, ts := newSim(t)
	if _, body := getBody(t, ts.URL+"/incidents"); strings.TrimSpace(body) != "[]" {
		t.Errorf("empty list = %q, want []", body)
	}
	post(t, ts.URL, "?from=Buildkite", ev("a", "FAILED", "d1"))
	post(t, ts.URL, "?from=Buildkite", ev("a", "PASSED", "d2"))
	post(t, ts.URL, "?from=Buildkite", ev("b", "ERROR", "d3"))

	resp, body := getBody(t, ts.URL+"/incidents")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(list) != 2 {
		t.Fatalf("%d incidents, want 2: %s", len(list), body)
	}
	wantKeys := [][]string{
		{"id", "opened_at", "resolved_at", "severity", "status", "title", "triggers"},
		{"id", "opened_at", "severity", "status", "title", "triggers"}, // open: no resolved_at
	}
	for i, in := range list {
		keys := make([]string, 0, len(in))
		for k := range in {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys[i]) {
			t.Errorf("incident %d keys %v, want %v", i, keys, wantKeys[i])
		}
	}
	first, second := list[0], list[1]
	if first["id"] != "a" || first["status"] != "resolved" || first["title"] != "Buildkite - d1" || first["severity"] != "high" {
		t.Errorf("first = %v", first)
	}
	if second["id"] != "b" || second["status"] != "open" {
		t.Errorf("second = %v", second)
	}
}

func TestPage(t *testing.T) {
	_, ts := newSim(t)
	evil := `<script>alert(1)</script>`
	post(t, ts.URL, "", ev("resolved-one", "FAILED", "r"))
	post(t, ts.URL, "", ev("resolved-one", "PASSED", "r"))
	post(t, ts.URL, "", ev(evil, "FAILED", `"><img src=x>`))

	resp, body := getBody(t, ts.URL+"/")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q", ct)
	}
	for _, bad := range []string{evil, `<img src=x>`} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	for _, want := range []string{`&lt;script&gt;alert(1)&lt;/script&gt;`, `&lt;img src=x&gt;`, `http-equiv="refresh"`, "resolved-one"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if o, r := strings.Index(body, "&lt;script&gt;"), strings.Index(body, "resolved-one"); o > r {
		t.Errorf("open incident listed after the resolved one")
	}
	for _, ext := range []string{"src=\"http", "href=\"http", "<link", "<script"} {
		if strings.Contains(body, ext) {
			t.Errorf("page is not self-contained: has %q", ext)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
}

// The page shows each incident's calls, links only web URLs, and has the
// reset form.
func TestPageHistory(t *testing.T) {
	_, ts := newSim(t)
	post(t, ts.URL, "", evURL("acme/api/main", "FAILED", "api #7 failed", "https://buildkite.com/acme/api/builds/7", 7))
	post(t, ts.URL, "", evURL("acme/api/main", "FAILED", "api #8 failed", "javascript:alert(1)", 8))
	post(t, ts.URL, "", evURL("acme/api/main", "FIXED", "api #9 fixed", "https://buildkite.com/acme/api/builds/9?a=1&b=2", 9))
	post(t, ts.URL, "", ev("acme/never/main", "PASSED", "x"))

	_, body := getBody(t, ts.URL+"/")
	for _, want := range []string{
		`<form method="post" action="/reset">`, `id="reset"`,
		`<a href="https://buildkite.com/acme/api/builds/7" rel="noreferrer">#7</a>`,
		`<a href="https://buildkite.com/acme/api/builds/9?a=1&amp;b=2" rel="noreferrer">#9</a>`,
		">created<", ">duplicate trigger<", ">resolved<", ">nothing to resolve<",
		"api #8 failed", "Calls that reached no incident", "acme/never/main", `href="/history"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "javascript:") || strings.Contains(body, "#ZgotmplZ") {
		t.Error("page links a javascript: URL")
	}
	if n := strings.Count(body, `<tr class="call">`); n != 4 {
		t.Errorf("%d call rows, want 4", n)
	}
	if a, b := strings.Index(body, "api #7 failed"), strings.Index(body, "api #9 fixed"); a > b {
		t.Error("an incident's calls are not oldest first")
	}
}

func TestFaultStatus(t *testing.T) {
	s, ts := newSim(t)
	var seen []string
	s.SetFault(func(call int, body []byte) *Fault {
		seen = append(seen, fmt.Sprintf("%d:%d", call, len(body)))
		if call <= 2 {
			return &Fault{Status: []int{500, 429}[call-1]}
		}
		return nil
	})
	body := ev("a", "FAILED", "d")
	for i, want := range []int{500, 429} {
		r := post(t, ts.URL, "", body)
		if r.code != want {
			t.Fatalf("call %d: status %d, want %d", i+1, r.code, want)
		}
		if s.Calls() != 0 || len(s.Incidents()) != 0 {
			t.Fatalf("call %d: faulted call was processed", i+1)
		}
	}
	if r := post(t, ts.URL, "", body); r.code != 201 {
		t.Fatalf("after faults: status %d, want 201", r.code)
	}
	n := fmt.Sprint(len(body))
	if want := []string{"1:" + n, "2:" + n, "3:" + n}; !slices.Equal(seen, want) {
		t.Errorf("fault hook saw %v, want %v", seen, want)
	}
	s.SetFault(nil)
	if r := post(t, ts.URL, "", body); r.code != 200 {
		t.Errorf("after SetFault(nil): status %d, want 200", r.code)
	}
}

func TestFaultZeroIs500(t *testing.T) {
	s, ts := newSim(t)
	s.SetFault(func(int, []byte) *Fault { return &Fault{} })
	if r := post(t, ts.URL, "", ev("a", "FAILED", "d")); r.code != 500 {
		t.Errorf("status %d, want 500", r.code)
	}
}

// tracked serves s and reports on done each time a request's handling ends.
func tracked(t *testing.T, s *Server) (*httptest.Server, chan struct{}) {
	done := make(chan struct{}, 10)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { s.Close(); ts.Close() })
	return ts, done
}

func sendRaw(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+"/v1/process", strings.NewReader(ev("a", "FAILED", "d")))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func TestFaultDrop(t *testing.T) {
	s := New(token)
	ts, done := tracked(t, s)
	s.SetFault(func(int, []byte) *Fault { return &Fault{Drop: true} })
	if err := sendRaw(context.Background(), ts.URL); err == nil {
		t.Fatal("dropped connection: client got an answer")
	}
	<-done
	if s.Calls() != 0 || len(s.Incidents()) != 0 {
		t.Error("dropped call was processed")
	}
}

func TestFaultHang(t *testing.T) {
	tests := []struct {
		name    string
		release func(cancel context.CancelFunc, s *Server)
	}{
		{"client gives up", func(cancel context.CancelFunc, _ *Server) { cancel() }},
		{"Close releases", func(_ context.CancelFunc, s *Server) { s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(token)
			ts, done := tracked(t, s)
			entered := make(chan struct{})
			s.SetFault(func(int, []byte) *Fault { close(entered); return &Fault{Hang: true} })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- sendRaw(ctx, ts.URL) }()
			<-entered
			select {
			case <-done:
				t.Fatal("handler returned before release")
			case err := <-errc:
				t.Fatalf("client got %v before release", err)
			default:
			}
			tt.release(cancel, s)
			if err := <-errc; err == nil {
				t.Error("hung call: client got an answer")
			}
			<-done // the handler ends; a bug here hangs the test until its timeout
			if s.Calls() != 0 {
				t.Error("hung call was processed")
			}
		})
	}
}

func TestWait(t *testing.T) {
	s, ts := newSim(t)
	isOpen := func(s *Server) bool { _, ok := s.Open("a"); return ok }

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(ctx, isOpen); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a false cond with a canceled ctx = %v, want Canceled", err)
	}

	waited := make(chan error, 1)
	go func() { waited <- s.Wait(context.Background(), isOpen) }()
	post(t, ts.URL, "", ev("other", "FAILED", "d")) // wakes Wait, cond still false
	post(t, ts.URL, "", ev("a", "FAILED", "d"))
	if err := <-waited; err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if err := s.Wait(ctx, isOpen); err != nil {
		t.Errorf("Wait on a true cond = %v, want nil even with a canceled ctx", err)
	}
}

func TestReset(t *testing.T) {
	s, ts := newSim(t)
	post(t, ts.URL, "", ev("a", "FAILED", "d"))
	s.SetFault(func(int, []byte) *Fault { return &Fault{Status: 503} })
	s.Reset()
	if s.Calls() != 0 || len(s.Incidents()) != 0 {
		t.Fatal("Reset left state behind")
	}
	if _, ok := s.Open("a"); ok {
		t.Fatal("Reset left an open incident")
	}
	if r := post(t, ts.URL, "", ev("a", "FAILED", "d")); r.code != 201 {
		t.Errorf("after Reset: status %d, want 201 (fault cleared, id free)", r.code)
	}
}

func TestIncidentsAreCopies(t *testing.T) {
	s, ts := newSim(t)
	post(t, ts.URL, "", ev("a", "FAILED", "d"))
	post(t, ts.URL, "", ev("a", "PASSED", "d"))
	got := s.Incidents()
	orig := *got[0].ResolvedAt
	got[0].Title = "changed"
	*got[0].ResolvedAt = orig.Add(1)
	again := s.Incidents()[0]
	if again.Title == "changed" || !again.ResolvedAt.Equal(orig) {
		t.Error("Incidents() exposes the simulator's records")
	}
}

func TestConcurrentTriggers(t *testing.T) {
	s, ts := newSim(t)
	const n = 20
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			// Not post: t.Fatal must not run off the test goroutine.
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/process", strings.NewReader(ev("a", "FAILED", "d")))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	created := 0
	for c := range codes {
		switch c {
		case 201:
			created++
		case 200:
		default:
			t.Errorf("status %d", c)
		}
	}
	if created != 1 {
		t.Errorf("%d calls created an incident, want 1", created)
	}
	if in, ok := s.Open("a"); !ok || in.Triggers != n {
		t.Errorf("open incident %+v, want %d triggers", in, n)
	}
	if s.Calls() != n {
		t.Errorf("Calls() = %d, want %d", s.Calls(), n)
	}
}

// With a dead-letter source, GET /dead-letters lists it and the page shows
// it, escaped; without one neither mentions dead letters.
func TestDeadLetters(t *testing.T) {
	s, ts := newSim(t)
	if _, body := getBody(t, ts.URL+"/"); strings.Contains(body, "Dead letters") {
		t.Error("page shows a dead-letter section with no source")
	}
	at := time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)
	var list []DeadLetter
	s.SetDeadLetters(func() []DeadLetter { return list })
	if resp, body := getBody(t, ts.URL+"/dead-letters"); resp.StatusCode != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("empty: %d %s, want 200 []", resp.StatusCode, body)
	}
	list = []DeadLetter{{MessageID: "m-1", Reason: "retry_window_exceeded", IncidentID: "acme/<b>x</b>/main", Event: "build.finished", Build: 42, Receives: 906, At: at}}
	resp, body := getBody(t, ts.URL+"/dead-letters")
	want := `[{"message_id":"m-1","reason":"retry_window_exceeded","incident_id":"acme/\u003cb\u003ex\u003c/b\u003e/main","event":"build.finished","build_number":42,"receives":906,"at":"2024-08-05T12:00:00Z"}]`
	if resp.StatusCode != 200 || strings.TrimSpace(body) != want {
		t.Errorf("GET /dead-letters = %d %s\nwant %s", resp.StatusCode, body, want)
	}
	_, page := getBody(t, ts.URL+"/")
	for _, w := range []string{"Dead letters", "retry_window_exceeded", "acme/&lt;b&gt;x&lt;/b&gt;/main", "m-1", `href="/dead-letters"`, "1 dead letters"} {
		if !strings.Contains(page, w) {
			t.Errorf("page lacks %q", w)
		}
	}
	if strings.Contains(page, "<b>x</b>") {
		t.Error("page shows the incident id unescaped")
	}
}
