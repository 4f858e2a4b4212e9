package sqibs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tokens with characters that need escaping in a query, so a leak in
// either raw or escaped form is caught.
const (
	tokOld = "old-T0KEN+/=&x"
	tokNew = "new-T0KEN-rotated"
)

const payload = `{"event":{"id":"acme/deploy-api/main","status":"FAILED"}}`

// tokens is a TokenSource: Get returns the current token, Refresh moves to next.
type tokens struct {
	mu         sync.Mutex
	cur, next  string
	getErr     error
	refreshErr error
	gets       int
	refreshes  int
}

func newTokens() *tokens { return &tokens{cur: tokOld, next: tokNew} }

func (k *tokens) Get(context.Context) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gets++
	if k.getErr != nil {
		return "", k.getErr
	}
	return k.cur, nil
}

func (k *tokens) Refresh(context.Context) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refreshes++
	if k.refreshErr != nil {
		return "", k.refreshErr
	}
	k.cur = k.next
	return k.cur, nil
}

func (k *tokens) counts() (gets, refreshes int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gets, k.refreshes
}

// seen is one request as the fake SQIBS received it.
type seen struct {
	Method, Path string
	Query        url.Values
	RawQuery     string
	Auth         string
	ContentType  string
	UserAgent    string
	Body         string
}

// token is the token the request carried, however it came.
func (s seen) token() string {
	if t, ok := strings.CutPrefix(s.Auth, "Bearer "); ok {
		return t
	}
	return s.Query.Get("token")
}

type server struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

// newServer starts a fake SQIBS; h answers the n-th request (1-based).
// opts adjust the server before it starts.
func newServer(t *testing.T, h func(n int, s seen, w http.ResponseWriter, r *http.Request), opts ...func(*http.Server)) *server {
	t.Helper()
	srv := &server{}
	srv.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := seen{r.Method, r.URL.Path, r.URL.Query(), r.URL.RawQuery, r.Header.Get("Authorization"),
			r.Header.Get("Content-Type"), r.Header.Get("User-Agent"), string(b)}
		srv.mu.Lock()
		srv.reqs = append(srv.reqs, s)
		n := len(srv.reqs)
		srv.mu.Unlock()
		h(n, s, w, r)
	}))
	for _, o := range opts {
		o(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func (s *server) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

func respond(code int, body string) func(int, seen, http.ResponseWriter, *http.Request) {
	return func(_ int, _ seen, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func newClient(t *testing.T, cfg Config, k TokenSource) *Client {
	t.Helper()
	c, err := New(cfg, k, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// noLeak fails when any rendering of err and res (message, %+v, %#v, JSON
// and text slog output) holds a token or a token query parameter.
func noLeak(t *testing.T, err error, res Result) {
	t.Helper()
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		slog.New(h).Error("send failed", "error", err, "result", res, "msg", fmt.Sprint(err))
	}
	var se *Error
	if errors.As(err, &se) {
		logs.WriteString(se.Body)
		fmt.Fprintf(&logs, "%+v %#v", se, se)
	}
	fmt.Fprintf(&logs, "%+v %#v", res, res)
	out := logs.String()
	for _, tok := range []string{tokOld, tokNew} {
		for _, form := range []string{tok, url.QueryEscape(tok), "T0KEN"} {
			if strings.Contains(out, form) {
				t.Fatalf("token leaked (%q) in: %s", form, out)
			}
		}
	}
	if strings.Contains(out, "token=") {
		t.Fatalf("token query parameter leaked in: %s", out)
	}
}

func TestStatusClasses(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		body     string
		class    Class
		wantResp Response
		wantBody string // in Error.Body
	}{
		{name: "200 resolved", code: 200, class: Success,
			body:     `{"id":"api-1","resolved":{"duplicate":false,"resolved":true},"triggered":{"duplicate":false,"created":false}}`,
			wantResp: resp("api-1", false, false, false, true)},
		{name: "201 created", code: 201, class: Success,
			body:     `{"id":"api-2","resolved":{"duplicate":false,"resolved":false},"triggered":{"duplicate":false,"created":true}}`,
			wantResp: resp("api-2", true, false, false, false)},
		{name: "201 duplicate", code: 201, class: Success,
			body:     `{"id":"api-3","triggered":{"duplicate":true,"created":false}}`,
			wantResp: resp("api-3", false, true, false, false)},
		{name: "202 no filter", code: 202, class: Success, body: `{"id":"api-4"}`, wantResp: resp("api-4", false, false, false, false)},
		{name: "202 empty body", code: 202, class: Success},
		{name: "200 not JSON", code: 200, class: Success, body: "<html>ok</html>"},
		{name: "400 permanent", code: 400, class: Permanent, body: `{"error":"payload is not valid"}`, wantBody: `{"error":"payload is not valid"}`},
		{name: "404 permanent", code: 404, class: Permanent, body: "no such endpoint", wantBody: "no such endpoint"},
		{name: "422 permanent", code: 422, class: Permanent, body: "bad", wantBody: "bad"},
		{name: "408 transient", code: 408, class: Transient},
		{name: "429 transient", code: 429, class: Transient, body: "slow down", wantBody: "slow down"},
		{name: "500 transient", code: 500, class: Transient, body: "oops", wantBody: "oops"},
		{name: "502 transient", code: 502, class: Transient},
		{name: "503 transient", code: 503, class: Transient, body: "maintenance", wantBody: "maintenance"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, respond(tc.code, tc.body))
			k := newTokens()
			c := newClient(t, Config{URL: srv.URL + "/sqibs-api/v1/process", Timeout: 5 * time.Second}, k)
			res, err := c.Send(context.Background(), []byte(payload))

			if res.Status != tc.code || res.Attempts != 1 || res.Latency <= 0 {
				t.Errorf("result = %+v, want status %d, 1 attempt, a latency", res, tc.code)
			}
			if got := len(srv.requests()); got != 1 {
				t.Errorf("requests = %d, want 1", got)
			}
			if _, refreshes := k.counts(); refreshes != 0 {
				t.Errorf("refreshes = %d, want 0", refreshes)
			}
			if tc.class == Success {
				if err != nil {
					t.Fatalf("err = %v, want success", err)
				}
				if res.Response != tc.wantResp {
					t.Errorf("response = %+v, want %+v", res.Response, tc.wantResp)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %#v, want *Error", err)
			}
			if se.Class != tc.class || se.Status != tc.code || se.Body != tc.wantBody {
				t.Errorf("error = %+v, want class %v status %d body %q", se, tc.class, tc.code, tc.wantBody)
			}
			if IsTransient(err) != (tc.class == Transient) || IsPermanent(err) != (tc.class == Permanent) {
				t.Errorf("IsTransient=%v IsPermanent=%v for class %v", IsTransient(err), IsPermanent(err), tc.class)
			}
			if want := fmt.Sprintf("HTTP %d", tc.code); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
			if res.Response != (Response{}) {
				t.Errorf("response decoded on failure: %+v", res.Response)
			}
			noLeak(t, err, res)
		})
	}
}

func resp(id string, created, trigDup, resDup, resolved bool) Response {
	var r Response
	r.ID = id
	r.Triggered.Created, r.Triggered.Duplicate = created, trigDup
	r.Resolved.Duplicate, r.Resolved.Resolved = resDup, resolved
	return r
}

func TestRequestShape(t *testing.T) {
	tests := []struct {
		name      string
		url       string // appended to the server URL
		auth      Auth
		from      string
		wantPath  string
		wantQuery url.Values // exact, token excluded
	}{
		{"header", "/sqibs-api/v1/process", AuthHeader, "Buildkite", "/sqibs-api/v1/process", url.Values{"from": {"Buildkite"}}},
		{"header default auth", "/v1/process", "", "Buildkite", "/v1/process", url.Values{"from": {"Buildkite"}}},
		{"header no from", "/v1/process", AuthHeader, "", "/v1/process", url.Values{}},
		{"query", "/v1/process", AuthQuery, "Buildkite CI", "/v1/process", url.Values{"from": {"Buildkite CI"}}},
		{"query no from", "/v1/process", AuthQuery, "", "/v1/process", url.Values{}},
		{"existing query kept", "/v1/process?region=eu&tag=a&tag=b", AuthQuery, "BK", "/v1/process",
			url.Values{"region": {"eu"}, "tag": {"a", "b"}, "from": {"BK"}}},
		{"existing query kept, header", "/v1/process?region=eu", AuthHeader, "", "/v1/process", url.Values{"region": {"eu"}}},
		{"configured from replaced", "/v1/process?from=old", AuthHeader, "Buildkite", "/v1/process", url.Values{"from": {"Buildkite"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, respond(201, `{"id":"x"}`))
			c := newClient(t, Config{URL: srv.URL + tc.url, Auth: tc.auth, From: tc.from, Timeout: 5 * time.Second}, newTokens())
			for range 2 { // the per-request token must not pile up on the shared URL
				if _, err := c.Send(context.Background(), []byte(payload)); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range srv.requests() {
				if r.Method != http.MethodPost || r.Path != tc.wantPath || r.Body != payload {
					t.Errorf("got %s %s body %q", r.Method, r.Path, r.Body)
				}
				if r.ContentType != "application/json" || r.UserAgent != UserAgent {
					t.Errorf("content-type %q user-agent %q", r.ContentType, r.UserAgent)
				}
				q := url.Values{}
				for k, v := range r.Query {
					q[k] = v
				}
				tokens := q["token"]
				delete(q, "token")
				if q.Encode() != tc.wantQuery.Encode() {
					t.Errorf("query = %v, want %v", q, tc.wantQuery)
				}
				if tc.auth == AuthQuery {
					if len(tokens) != 1 || tokens[0] != tokOld || r.Auth != "" {
						t.Errorf("query auth: token params %q, Authorization %q", tokens, r.Auth)
					}
				} else if r.Auth != "Bearer "+tokOld || len(tokens) != 0 {
					t.Errorf("header auth: Authorization %q, token params %q", r.Auth, tokens)
				}
			}
		})
	}
}

// SQIBS_URL's query is kept verbatim (DESIGN §2): pairs url.Values would
// drop (';'), reorder or rewrite (a bare flag) survive; only from (and token
// in query mode) are set, replacing any the URL had.
func TestQueryKeptVerbatim(t *testing.T) {
	tok := "token=" + url.QueryEscape(tokOld)
	tests := []struct {
		name    string
		query   string
		auth    Auth
		from    string
		wantRaw string
	}{
		{"semicolon and order", "key=a;b&z=1&a=2", AuthHeader, "Buildkite", "key=a;b&z=1&a=2&from=Buildkite"},
		{"bare flag", "flag&b=%2F", AuthHeader, "", "flag&b=%2F"},
		{"from replaced in place of its pairs", "from=old&x=1&from=older", AuthHeader, "Buildkite CI", "x=1&from=Buildkite+CI"},
		{"escaped from name replaced", "fr%6Fm=old&x=1", AuthHeader, "BK", "x=1&from=BK"},
		{"query token after from", "x=1;2", AuthQuery, "BK", "x=1;2&from=BK&" + tok},
		{"query token replaces one in the URL", "token=stale&x=1", AuthQuery, "", "x=1&" + tok},
		{"header mode leaves token pairs alone", "token=mine", AuthHeader, "", "token=mine"},
		{"nothing to set: untouched", "&&x=1&", AuthHeader, "", "&&x=1&"},
		{"empty pairs dropped when from is set", "&&x=1&", AuthHeader, "BK", "x=1&from=BK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, respond(201, `{"id":"x"}`))
			c := newClient(t, Config{URL: srv.URL + "/v1/process?" + tc.query, Auth: tc.auth, From: tc.from, Timeout: 5 * time.Second}, newTokens())
			for range 2 {
				if _, err := c.Send(context.Background(), []byte(payload)); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range srv.requests() {
				if r.RawQuery != tc.wantRaw {
					t.Errorf("query %q, want %q", r.RawQuery, tc.wantRaw)
				}
			}
		})
	}
}

func TestTokenRefused(t *testing.T) {
	tests := []struct {
		name        string
		auth        Auth
		code        int
		newWorks    bool  // SQIBS accepts the refreshed token
		refreshErr  error // Refresh fails
		wantErr     bool
		wantReqs    int
		wantTokens  []string // token of each request
		wantErrText string
	}{
		{name: "401 then success", auth: AuthHeader, code: 401, newWorks: true, wantReqs: 2, wantTokens: []string{tokOld, tokNew}},
		{name: "403 then success", auth: AuthHeader, code: 403, newWorks: true, wantReqs: 2, wantTokens: []string{tokOld, tokNew}},
		{name: "401 then success, query", auth: AuthQuery, code: 401, newWorks: true, wantReqs: 2, wantTokens: []string{tokOld, tokNew}},
		{name: "401 twice", auth: AuthHeader, code: 401, wantErr: true, wantReqs: 2, wantTokens: []string{tokOld, tokNew}, wantErrText: "also after a refresh"},
		{name: "403 twice", auth: AuthHeader, code: 403, wantErr: true, wantReqs: 2, wantTokens: []string{tokOld, tokNew}, wantErrText: "also after a refresh"},
		{name: "401 twice, query", auth: AuthQuery, code: 401, wantErr: true, wantReqs: 2, wantTokens: []string{tokOld, tokNew}, wantErrText: "also after a refresh"},
		{name: "401 and refresh fails", auth: AuthHeader, code: 401, refreshErr: errors.New("secrets manager down"),
			wantErr: true, wantReqs: 1, wantTokens: []string{tokOld}, wantErrText: "secrets manager down"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(_ int, s seen, w http.ResponseWriter, _ *http.Request) {
				if tc.newWorks && s.token() == tokNew {
					w.WriteHeader(201)
					io.WriteString(w, `{"id":"ok","triggered":{"created":true}}`)
					return
				}
				w.WriteHeader(tc.code)
				io.WriteString(w, `{"message":"invalid token"}`)
			})
			k := newTokens()
			k.refreshErr = tc.refreshErr
			c := newClient(t, Config{URL: srv.URL + "/v1/process", Auth: tc.auth, From: "Buildkite", Timeout: 5 * time.Second}, k)
			res, err := c.Send(context.Background(), []byte(payload))

			if gets, refreshes := k.counts(); gets != 1 || refreshes != 1 {
				t.Errorf("token source: %d gets, %d refreshes; want 1 and 1", gets, refreshes)
			}
			reqs := srv.requests()
			var got []string
			for _, r := range reqs {
				got = append(got, r.token())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantTokens) || res.Attempts != tc.wantReqs {
				t.Errorf("requests carried %q (attempts %d), want %q", got, res.Attempts, tc.wantTokens)
			}
			if !tc.wantErr {
				if err != nil || res.Status != 201 || !res.Response.Triggered.Created {
					t.Fatalf("Send = %+v, %v; want 201 created", res, err)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) || se.Class != Transient || se.Status != tc.code || !IsTransient(err) {
				t.Fatalf("err = %#v, want a transient *Error with status %d", err, tc.code)
			}
			if se.Body != `{"message":"invalid token"}` || !strings.Contains(err.Error(), tc.wantErrText) {
				t.Errorf("error %q body %q", err, se.Body)
			}
			noLeak(t, err, res)
		})
	}
}

func TestTokenFetchError(t *testing.T) {
	srv := newServer(t, respond(201, ""))
	k := newTokens()
	k.getErr = errors.New("AccessDeniedException: not allowed")
	c := newClient(t, Config{URL: srv.URL, Auth: AuthQuery, Timeout: time.Second}, k)
	res, err := c.Send(context.Background(), []byte(payload))
	if !IsTransient(err) || IsPermanent(err) || res.Attempts != 0 || len(srv.requests()) != 0 {
		t.Fatalf("Send = %+v, %v; want transient with no request", res, err)
	}
	if !errors.Is(err, k.getErr) || !strings.Contains(err.Error(), "get token") {
		t.Errorf("error %q does not carry the cause", err)
	}
	noLeak(t, err, res)
}

// Network-level failures: SQIBS never answers with a status.
func TestNetworkFailures(t *testing.T) {
	slow := func(t *testing.T) (string, func(*testing.T, error)) {
		release := make(chan struct{})
		srv := newServer(t, func(_ int, _ seen, w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		t.Cleanup(func() { close(release) }) // runs before srv.Close
		return srv.URL, func(t *testing.T, err error) {
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 50ms") {
				t.Errorf("error %q does not say it timed out", err)
			}
		}
	}
	dropped := func(t *testing.T) (string, func(*testing.T, error)) {
		srv := newServer(t, func(_ int, _ seen, w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			conn.Close()
		})
		return srv.URL, func(t *testing.T, err error) {
			if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Errorf("error %q is not a dropped connection", err)
			}
		}
	}
	refused := func(t *testing.T) (string, func(*testing.T, error)) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr, func(t *testing.T, err error) {
			var op *net.OpError
			if !errors.As(err, &op) {
				t.Errorf("error %q is not a *net.OpError", err)
			}
		}
	}
	tests := []struct {
		name  string
		setup func(*testing.T) (string, func(*testing.T, error))
	}{
		{"timeout", slow},
		{"dropped connection", dropped},
		{"connection refused", refused},
	}
	for _, tc := range tests {
		for _, auth := range []Auth{AuthQuery, AuthHeader} {
			t.Run(tc.name+"/"+string(auth), func(t *testing.T) {
				base, check := tc.setup(t)
				c := newClient(t, Config{URL: base + "/sqibs-api/v1/process?region=eu", Auth: auth, From: "Buildkite", Timeout: 50 * time.Millisecond}, newTokens())
				res, err := c.Send(context.Background(), []byte(payload))
				var se *Error
				if !errors.As(err, &se) || se.Class != Transient || se.Status != 0 || !IsTransient(err) {
					t.Fatalf("err = %#v, want a transient *Error without status", err)
				}
				if res.Status != 0 || res.Attempts != 1 {
					t.Errorf("result = %+v", res)
				}
				var ue *url.Error
				if errors.As(err, &ue) {
					t.Errorf("a *url.Error (which quotes the full URL) is still in the chain: %v", ue)
				}
				// Where it failed is said, without the query.
				if !strings.Contains(err.Error(), "POST "+base+"/sqibs-api/v1/process: ") || strings.Contains(err.Error(), "region") {
					t.Errorf("error %q should name the endpoint without its query", err)
				}
				check(t, err)
				noLeak(t, err, res)
			})
		}
	}
}

func TestCallerCanceled(t *testing.T) {
	srv := newServer(t, respond(201, ""))
	c := newClient(t, Config{URL: srv.URL, Auth: AuthQuery, Timeout: time.Second}, newTokens())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := c.Send(ctx, []byte(payload))
	if !IsTransient(err) || !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("err = %v, want transient context.Canceled", err)
	}
	noLeak(t, err, res)
}

// SQIBS (or a proxy in front) echoing the request must not put the token in
// the Body kept for the log.
func TestBodyRedactedAndClipped(t *testing.T) {
	srv := newServer(t, func(_ int, s seen, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		fmt.Fprintf(w, "bad request to %s with %s and %s ", r.URL.String(), s.Auth, s.token())
		io.WriteString(w, strings.Repeat("é", 4000)) // 8 KB of two-byte runes
	})
	for _, auth := range []Auth{AuthQuery, AuthHeader} {
		c := newClient(t, Config{URL: srv.URL, Auth: auth, Timeout: time.Second}, newTokens())
		res, err := c.Send(context.Background(), []byte(payload))
		var se *Error
		if !errors.As(err, &se) || se.Class != Permanent {
			t.Fatalf("err = %v, want permanent", err)
		}
		if !strings.Contains(se.Body, "[REDACTED]") || len(se.Body) > maxErrBody+len("…") || !strings.HasSuffix(se.Body, "é…") {
			t.Errorf("body not redacted and clipped on a rune boundary (%d bytes): %q", len(se.Body), se.Body)
		}
		if strings.Contains(err.Error(), "é") {
			t.Errorf("error message carries the body: %q", err)
		}
		res.Response = Response{}
		se.Body = strings.ReplaceAll(se.Body, "token=[REDACTED]", "")
		noLeak(t, err, res)
	}
}

// A redirect is not followed: a POST turned into a GET could look like success.
func TestRedirectNotFollowed(t *testing.T) {
	srv := newServer(t, func(n int, _ seen, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			w.WriteHeader(200)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	// A caller's client is copied, not changed.
	hc := &http.Client{}
	c, err := New(Config{URL: srv.URL + "/v1/process", Timeout: time.Second}, newTokens(), hc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Send(context.Background(), []byte(payload))
	if !IsPermanent(err) || !strings.Contains(err.Error(), "HTTP 302") || !strings.Contains(err.Error(), "SQIBS_URL") {
		t.Fatalf("err = %v, want permanent 302 naming SQIBS_URL", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("requests = %d, want 1 (redirect not followed)", n)
	}
	if hc.CheckRedirect != nil {
		t.Error("the caller's http.Client was modified")
	}
}

// Error bodies are drained and closed so the next request reuses the connection.
func TestConnectionReused(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	var mu sync.Mutex
	conns := 0
	srv := newServer(t, func(n int, _ seen, w http.ResponseWriter, _ *http.Request) {
		if n%2 == 0 {
			w.WriteHeader(201)
			io.WriteString(w, big)
			return
		}
		w.WriteHeader(500)
		io.WriteString(w, big)
	}, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				mu.Lock()
				conns++
				mu.Unlock()
			}
		}
	})
	c := newClient(t, Config{URL: srv.URL, Timeout: 5 * time.Second}, newTokens())
	for range 4 {
		c.Send(context.Background(), []byte(payload))
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections for 4 sequential requests, want 1", conns)
	}
}

func TestConcurrentSends(t *testing.T) {
	srv := newServer(t, respond(201, `{"id":"x","triggered":{"created":true}}`))
	c := newClient(t, Config{URL: srv.URL, Auth: AuthQuery, From: "Buildkite", Timeout: 5 * time.Second}, newTokens())
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := c.Send(context.Background(), []byte(payload)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, r := range srv.requests() {
		if len(r.Query["token"]) != 1 || len(r.Query["from"]) != 1 {
			t.Fatalf("query = %v", r.Query)
		}
	}
}

func TestNewValidates(t *testing.T) {
	ok := Config{URL: "https://sqibs.callgoose.com/sqibs-api/v1/process", Auth: AuthHeader, Timeout: time.Second}
	tests := []struct {
		name    string
		mut     func(*Config)
		nilTok  bool
		wantErr string // "" = valid
	}{
		{name: "valid", mut: func(*Config) {}},
		{name: "http allowed", mut: func(c *Config) { c.URL = "http://127.0.0.1:8081/v1/process" }},
		{name: "empty auth is header", mut: func(c *Config) { c.Auth = "" }},
		{name: "zero timeout is default", mut: func(c *Config) { c.Timeout = 0 }},
		{name: "empty URL", mut: func(c *Config) { c.URL = "" }, wantErr: "absolute"},
		{name: "relative URL", mut: func(c *Config) { c.URL = "/v1/process" }, wantErr: "absolute"},
		{name: "no host", mut: func(c *Config) { c.URL = "https:///v1/process" }, wantErr: "absolute"},
		{name: "no scheme", mut: func(c *Config) { c.URL = "sqibs.callgoose.com/v1/process" }, wantErr: "absolute"},
		{name: "ftp", mut: func(c *Config) { c.URL = "ftp://sqibs.callgoose.com/v1/process" }, wantErr: "absolute"},
		{name: "unparsable, token not echoed", mut: func(c *Config) { c.URL = "https://[::1/v1/process?token=" + tokOld }, wantErr: "not a valid URL"},
		{name: "bad auth", mut: func(c *Config) { c.Auth = "basic" }, wantErr: "SQIBS_AUTH"},
		{name: "negative timeout", mut: func(c *Config) { c.Timeout = -time.Second }, wantErr: "SQIBS_TIMEOUT"},
		{name: "nil token source", mut: func(*Config) {}, nilTok: true, wantErr: "token source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mut(&cfg)
			var k TokenSource = newTokens()
			if tc.nilTok {
				k = nil
			}
			c, err := New(cfg, k, nil)
			if tc.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("New = %v, %v", c, err)
				}
				if c.auth != AuthHeader && cfg.Auth == "" || c.timeout <= 0 {
					t.Errorf("defaults not applied: auth %q timeout %v", c.auth, c.timeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New err = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "T0KEN") {
				t.Errorf("config error echoes the token: %v", err)
			}
		})
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{Success: "success", Transient: "transient", Permanent: "permanent", Class(9): "Class(9)"} {
		if c.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(c), c.String(), want)
		}
	}
	if IsTransient(nil) || IsPermanent(nil) {
		t.Error("nil error classified as a failure")
	}
	if !IsTransient(errors.New("foreign")) || IsPermanent(errors.New("foreign")) {
		t.Error("a foreign error should be treated as transient")
	}
	wrapped := fmt.Errorf("deliver: %w", &Error{Class: Permanent, Status: 400})
	if !IsPermanent(wrapped) || IsTransient(wrapped) {
		t.Error("a wrapped permanent *Error not recognised")
	}
}
