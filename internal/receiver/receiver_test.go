package receiver

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

const (
	testToken   = "test-webhook-token-0123456789"
	rotateToken = "next-webhook-token-9876543210"
)

var fixedNow = time.Date(2024, 8, 5, 12, 0, 5, 0, time.UTC)

func newHandler(t testing.TB, tokens TokenSource, pub queue.Publisher, log *slog.Logger, mutate ...func(*Config)) *Handler {
	t.Helper()
	cfg := Config{
		MaxBodyBytes: 1 << 20,
		Auth:         buildkite.Authenticator{MaxAge: 5 * time.Minute, AllowToken: true, Now: func() time.Time { return fixedNow }},
		Rules:        incident.DefaultRules(),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	if log == nil {
		log = slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil))
	}
	h := New(cfg, tokens, pub, log, nil)
	h.now = func() time.Time { return fixedNow }
	return h
}

type req struct {
	method  string
	headers map[string]string
	body    string
	b64     bool
}

func (r req) event() events.LambdaFunctionURLRequest {
	m := r.method
	if m == "" {
		m = "POST"
	}
	e := events.LambdaFunctionURLRequest{Headers: r.headers, Body: r.body, IsBase64Encoded: r.b64}
	e.RequestContext.HTTP.Method = m
	e.RequestContext.RequestID = "lambda-req-1"
	return e
}

func signed(body []byte, event string, extra ...string) req {
	h := map[string]string{
		"content-type":          "application/json",
		"x-buildkite-signature": buildkite.Sign(testToken, fixedNow, body),
	}
	if event != "" {
		h["x-buildkite-event"] = event
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return req{headers: h, body: string(body)}
}

func TestHandlerRows(t *testing.T) {
	failed := testkit.Fixture(t, "build_finished_failed.json")
	passed := testkit.Fixture(t, "build_finished_passed.json")
	large := bytes.Repeat([]byte("x"), 2<<20)
	ts := fixedNow.Unix()

	tests := []struct {
		name       string
		req        req
		tokens     TokenSource
		pubErr     error
		mutate     func(*Config)
		wantStatus int
		wantBody   string // exact, or prefix when it ends in "*"
		wantQueued int
	}{
		{name: "queued signed failed", req: signed(failed, "build.finished"), wantStatus: 200, wantBody: `{"status":"queued","id":"msg-1"}`, wantQueued: 1},
		{name: "queued signed passed", req: signed(passed, "build.finished"), wantStatus: 200, wantBody: `{"status":"queued","id":"msg-1"}`, wantQueued: 1},
		{name: "queued token header", req: req{headers: map[string]string{"x-buildkite-token": testToken, "x-buildkite-event": "build.finished"}, body: string(failed)}, wantStatus: 200, wantQueued: 1, wantBody: `{"status":"queued","id":"msg-1"}`},
		{name: "queued with rotation token", req: req{headers: map[string]string{"x-buildkite-token": rotateToken}, body: string(failed)}, tokens: testkit.Token(testToken + "\n" + rotateToken + "\n"), wantStatus: 200, wantQueued: 1, wantBody: `{"status":"queued","id":"msg-1"}`},
		{name: "queued event from body only", req: signed(failed, ""), wantStatus: 200, wantQueued: 1, wantBody: `{"status":"queued","id":"msg-1"}`},
		{name: "queued mixed-case header names", req: req{headers: map[string]string{"X-Buildkite-Token": testToken, "Content-Type": "application/json; charset=utf-8"}, body: string(failed)}, wantStatus: 200, wantQueued: 1, wantBody: `{"status":"queued","id":"msg-1"}`},
		{name: "queued base64 body", req: func() req {
			r := signed(failed, "build.finished")
			r.body = base64.StdEncoding.EncodeToString(failed)
			r.b64 = true
			return r
		}(), wantStatus: 200, wantQueued: 1, wantBody: `{"status":"queued","id":"msg-1"}`},
		{name: "ping", req: signed(testkit.Fixture(t, "ping.json"), "ping"), wantStatus: 200, wantBody: `{"status":"pong"}`},
		{name: "ignored scheduled", req: signed(testkit.Fixture(t, "build_scheduled.json"), "build.scheduled"), wantStatus: 202, wantBody: `{"status":"ignored","reason":"event type never changes an incident"}`},
		{name: "ignored blocked", req: signed(testkit.Fixture(t, "build_finished_blocked.json"), "build.finished"), wantStatus: 202, wantBody: `{"status":"ignored","reason":"build is blocked, not finished"}`},
		{name: "ignored other branch", req: signed(testkit.Fixture(t, "build_finished_feature_branch.json"), "build.finished"), wantStatus: 202, wantBody: `{"status":"ignored","reason":"branch not in ALERT_BRANCHES"}`},
		{name: "ignored job when job incidents off", req: signed(testkit.Fixture(t, "job_finished_failed.json"), "job.finished"), wantStatus: 202, wantBody: `{"status":"ignored","reason":"job incidents are off (JOB_INCIDENTS)"}`},
		{name: "job queued when job incidents on", req: signed(testkit.Fixture(t, "job_finished_failed.json"), "job.finished"), mutate: func(c *Config) { c.Rules.JobIncidents = true }, wantStatus: 200, wantQueued: 1, wantBody: `{"status":"queued","id":"msg-1"}`},

		// 401: one body for every class.
		{name: "401 wrong token", req: req{headers: map[string]string{"x-buildkite-token": "nope"}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 wrong key", req: req{headers: map[string]string{"x-buildkite-signature": buildkite.Sign("other-key", fixedNow, failed)}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 stale", req: req{headers: map[string]string{"x-buildkite-signature": buildkite.Sign(testToken, fixedNow.Add(-301*time.Second), failed)}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 future", req: req{headers: map[string]string{"x-buildkite-signature": buildkite.Sign(testToken, fixedNow.Add(301*time.Second), failed)}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 missing", req: req{headers: map[string]string{"x-buildkite-event": "build.finished"}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 malformed a,b", req: req{headers: map[string]string{"x-buildkite-signature": "a,b"}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 malformed invalid", req: req{headers: map[string]string{"x-buildkite-signature": "invalid"}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 timestamp abc", req: req{headers: map[string]string{"x-buildkite-signature": "timestamp=abc,signature=" + strings.Repeat("ab", 32)}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 non-hex signature", req: req{headers: map[string]string{"x-buildkite-signature": "timestamp=" + strconv.FormatInt(ts, 10) + ",signature=" + strings.Repeat("zz", 32)}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 empty parts", req: req{headers: map[string]string{"x-buildkite-signature": "timestamp=,signature="}, body: string(failed)}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 trailing newline after signing", req: func() req { r := signed(failed, "build.finished"); r.body += "\n"; return r }(), wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 token header disallowed", req: req{headers: map[string]string{"x-buildkite-token": testToken}, body: string(failed)}, mutate: func(c *Config) { c.Auth.AllowToken = false }, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 no token configured", req: signed(failed, "build.finished"), tokens: nilTokens{}, wantStatus: 401, wantBody: bodyUnauthorized},
		{name: "401 before body is trusted", req: req{headers: map[string]string{"x-buildkite-token": "nope"}, body: "not json"}, wantStatus: 401, wantBody: bodyUnauthorized},

		{name: "405 GET", req: req{method: "GET"}, wantStatus: 405, wantBody: bodyNotAllowed},
		{name: "413 over max", req: signed(large, "build.finished"), wantStatus: 413, wantBody: bodyTooLarge},
		{name: "413 base64 over max", req: req{headers: map[string]string{"x-buildkite-token": testToken}, body: base64.StdEncoding.EncodeToString(large), b64: true}, wantStatus: 413, wantBody: bodyTooLarge},
		{name: "413 small MAX_BODY_BYTES", req: signed(failed, "build.finished"), mutate: func(c *Config) { c.MaxBodyBytes = 100 }, wantStatus: 413, wantBody: bodyTooLarge},
		{name: "415 text/plain", req: signed(failed, "build.finished", "content-type", "text/plain"), wantStatus: 415, wantBody: bodyUnsupported},
		{name: "415 form", req: signed(failed, "build.finished", "content-type", "application/x-www-form-urlencoded"), wantStatus: 415, wantBody: bodyUnsupported},
		{name: "400 not JSON", req: signed([]byte("hello"), "build.finished"), wantStatus: 400, wantBody: bodyBadJSON},
		{name: "400 JSON array", req: signed([]byte("[1,2]"), "build.finished"), wantStatus: 400, wantBody: bodyBadJSON},
		{name: "400 no event", req: signed([]byte(`{"build":{"id":"x"}}`), ""), wantStatus: 400, wantBody: bodyNoEvent},
		{name: "400 bad base64", req: req{headers: map[string]string{"x-buildkite-token": testToken}, body: "%%%not-base64", b64: true}, wantStatus: 400, wantBody: bodyBadBase64},
		{name: "503 secret unavailable", req: signed(failed, "build.finished"), tokens: testkit.TokenError{Err: errors.New("secret unavailable: boom")}, wantStatus: 503, wantBody: bodyUnavailable},
		{name: "503 queue unavailable", req: signed(failed, "build.finished"), pubErr: errors.New("queue unavailable"), wantStatus: 503, wantBody: bodyUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tokens TokenSource = testkit.Token(testToken)
			if tc.tokens != nil {
				tokens = tc.tokens
			}
			if _, ok := tokens.(nilTokens); ok {
				tokens = nil
			}
			pub := &testkit.Publisher[queue.Message]{Err: tc.pubErr}
			var mut []func(*Config)
			if tc.mutate != nil {
				mut = append(mut, tc.mutate)
			}
			h := newHandler(t, tokens, pub, nil, mut...)
			resp, err := h.Handle(context.Background(), tc.req.event())
			if err != nil {
				t.Fatalf("Handle returned error %v; the handler must always answer", err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, resp.Body)
			}
			if tc.wantBody != "" && resp.Body != tc.wantBody {
				t.Errorf("body = %s, want %s", resp.Body, tc.wantBody)
			}
			if !json.Valid([]byte(resp.Body)) {
				t.Errorf("body is not JSON: %s", resp.Body)
			}
			if resp.Headers["content-type"] != "application/json" {
				t.Errorf("content-type = %q", resp.Headers["content-type"])
			}
			if tc.wantStatus == 405 && resp.Headers["allow"] != "POST" {
				t.Errorf("405 without Allow: POST: %v", resp.Headers)
			}
			if got := pub.Len(); got != tc.wantQueued {
				t.Errorf("queued %d messages, want %d", got, tc.wantQueued)
			}
		})
	}
}

type nilTokens struct{}

func (nilTokens) Get(context.Context) (string, error) { return "", nil }

func TestQueuedMessage(t *testing.T) {
	body := testkit.Fixture(t, "build_finished_large.json")
	pub := &testkit.Publisher[queue.Message]{}
	h := newHandler(t, testkit.Token(testToken), pub, nil)
	r := signed(body, "build.finished", "x-buildkite-request", "bk-req-42")
	resp, _ := h.Handle(context.Background(), r.event())
	if resp.StatusCode != 200 || pub.Len() != 1 {
		t.Fatalf("status %d, %d messages", resp.StatusCode, pub.Len())
	}
	m := pub.Messages()[0]
	if m.GroupID != "acme/deploy-api/main" {
		t.Errorf("group id = %q", m.GroupID)
	}
	if len(m.DedupID) != 64 {
		t.Errorf("dedup id = %q, want sha256 hex", m.DedupID)
	}
	env, err := queue.Decode(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	if env.V != 1 || env.Event != "build.finished" || env.RequestID != "bk-req-42" || !env.ReceivedAt.Equal(fixedNow) {
		t.Errorf("envelope = %+v", env)
	}
	if env.Payload.Build == nil || env.Payload.Build.Number == 0 || env.Payload.Build.State != "failed" {
		t.Errorf("payload lost what mapping needs: %+v", env.Payload.Build)
	}
	assertNoSecrets(t, "queued message", m.Body)
	for _, key := range []string{`"env"`, `"steps"`, `"configuration"`, `"provider"`, `"agent"`, `"email"`, `"repository"`, `"creator"`} {
		if bytes.Contains(m.Body, []byte(key)) {
			t.Errorf("queued message holds trimmed key %s", key)
		}
	}

	// Without X-Buildkite-Request the Lambda request id is used.
	pub2 := &testkit.Publisher[queue.Message]{}
	h2 := newHandler(t, testkit.Token(testToken), pub2, nil)
	_, _ = h2.Handle(context.Background(), signed(body, "build.finished", "x-buildkite-request", "bad id with spaces").event())
	env2, err := queue.Decode(pub2.Messages()[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if env2.RequestID != "lambda-req-1" {
		t.Errorf("request id = %q, want the Lambda request id when the header is not a plain id", env2.RequestID)
	}
}

// The signature covers the body, not X-Buildkite-Event: a signed webhook
// replayed with another event header keeps the body's meaning, and so its
// deduplication id, so SQS drops the replay.
func TestSignedBodyNamesTheEvent(t *testing.T) {
	body := testkit.Fixture(t, "build_finished_passed.json")
	var logs bytes.Buffer
	pub := &testkit.Publisher[queue.Message]{}
	h := newHandler(t, testkit.Token(testToken), pub, slog.New(slog.NewJSONHandler(&logs, nil)))
	for _, hdr := range []string{"build.finished", "build.failing"} {
		resp, _ := h.Handle(context.Background(), signed(body, hdr).event())
		if resp.StatusCode != 200 {
			t.Fatalf("header %s: status %d %s", hdr, resp.StatusCode, resp.Body)
		}
	}
	msgs := pub.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for i, m := range msgs {
		env, err := queue.Decode(m.Body)
		if err != nil {
			t.Fatal(err)
		}
		if env.Event != "build.finished" {
			t.Errorf("message %d: event %q, want the body's build.finished", i, env.Event)
		}
	}
	if msgs[0].DedupID != msgs[1].DedupID {
		t.Errorf("dedup ids differ (%s, %s): the re-labelled replay would be delivered", msgs[0].DedupID, msgs[1].DedupID)
	}
	if n := strings.Count(logs.String(), "X-Buildkite-Event differs"); n != 1 {
		t.Errorf("%d mismatch warnings, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "build.failing") {
		t.Errorf("the caller's header value was logged:\n%s", logs.String())
	}

	// A body without a name takes the header's, spelt as Parse spells it
	// (trimmed, valid UTF-8): no mismatch to warn of.
	logs.Reset()
	var w map[string]any
	if err := json.Unmarshal(body, &w); err != nil {
		t.Fatal(err)
	}
	delete(w, "event")
	nameless, _ := json.Marshal(w)
	for _, hdr := range []string{" build.finished ", "build.finished\xff"} {
		if resp, _ := h.Handle(context.Background(), signed(nameless, hdr).event()); resp.StatusCode >= 300 {
			t.Fatalf("header %q: status %d %s", hdr, resp.StatusCode, resp.Body)
		}
	}
	if strings.Contains(logs.String(), "X-Buildkite-Event differs") {
		t.Errorf("warned of a mismatch where the header named the event:\n%s", logs.String())
	}
}

// secretMarkers are the sentinels the fixtures put in every secret-bearing
// field, plus the e-mail addresses.
var secretMarkers = []string{"SECRET-", "jane@example.com", "@example.com", testToken, rotateToken}

func assertNoSecrets(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, s := range secretMarkers {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s contains %q", what, s)
		}
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pub := &testkit.Publisher[queue.Message]{}
	var emf bytes.Buffer
	cfg := Config{MaxBodyBytes: 1 << 20, Auth: buildkite.Authenticator{MaxAge: 5 * time.Minute, AllowToken: true, Now: func() time.Time { return fixedNow }}, Rules: incident.DefaultRules()}
	h := New(cfg, testkit.Token(testToken+"\n"+rotateToken), pub, log, metrics.New(&emf, "receiver-test"))
	h.now = func() time.Time { return fixedNow }

	files, _ := filepath.Glob(filepath.Join("..", "buildkite", "testdata", "*.json"))
	if len(files) < 10 {
		t.Fatalf("expected the fixture set, found %d files", len(files))
	}
	for _, f := range files {
		body, _ := os.ReadFile(f)
		for _, r := range []req{
			signed(body, ""),
			{headers: map[string]string{"x-buildkite-token": testToken, "x-buildkite-event": "build.finished"}, body: string(body)},
			{headers: map[string]string{"x-buildkite-token": "wrong-" + testToken}, body: string(body)},
			{headers: map[string]string{"x-buildkite-signature": "timestamp=1,signature=" + strings.Repeat("0", 64)}, body: string(body)},
		} {
			_, _ = h.Handle(context.Background(), r.event())
		}
	}
	// Failure paths log errors too.
	hBad := New(cfg, testkit.TokenError{Err: errors.New("secret unavailable")}, &testkit.Publisher[queue.Message]{Err: errors.New("queue unavailable")}, log, nil)
	_, _ = hBad.Handle(context.Background(), signed(testkit.Fixture(t, "build_finished_large.json"), "build.finished").event())

	if logs.Len() == 0 {
		t.Fatal("no logs captured")
	}
	assertNoSecrets(t, "logs", logs.Bytes())
	assertNoSecrets(t, "metrics", emf.Bytes())
	if !strings.Contains(logs.String(), `"request_id"`) {
		t.Error("log lines carry no request_id")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log line is not JSON: %s", line)
		}
	}
	if !strings.Contains(emf.String(), `"queued":1`) || !strings.Contains(emf.String(), `"unauthorized":1`) {
		t.Errorf("EMF records missing: %s", emf.String())
	}
}

func TestNoTokenConfiguredLogsAtStart(t *testing.T) {
	var logs bytes.Buffer
	New(Config{}, nil, &testkit.Publisher[queue.Message]{}, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	if !strings.Contains(logs.String(), "no webhook token configured") {
		t.Errorf("no start-up line for the missing token: %q", logs.String())
	}
}

func FuzzHandler(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "buildkite", "testdata", "*.json"))
	for _, name := range files {
		b, _ := os.ReadFile(name)
		f.Add("POST", "build.finished", buildkite.Sign(testToken, fixedNow, b), "", "application/json", b, false)
		f.Add("POST", "", "", testToken, "", b, false)
	}
	f.Add("POST", "ping", "timestamp=,signature=", "", "text/plain", []byte("{}"), true)
	f.Add("GET", "", "a,b", "x", "", []byte(nil), false)
	huge := []byte(`{"event":"build.finished","build":{"state":"failed","branch":"main` + strings.Repeat("ü", 100<<10) +
		`","author":{"name":"jane@example.com","username":"jane@example.com"}},"pipeline":{"slug":"p","name":"jane@example.com"}}`)
	f.Add("POST", "", buildkite.Sign(testToken, fixedNow, huge), "", "application/json", huge, false)
	f.Fuzz(func(t *testing.T, method, event, sig, token, ct string, body []byte, b64 bool) {
		var logs bytes.Buffer
		pub := &testkit.Publisher[queue.Message]{}
		h := newHandler(t, testkit.Token(testToken), pub, slog.New(slog.NewJSONHandler(&logs, nil)),
			func(c *Config) { c.Rules.Branches = []string{"*"} })
		r := req{method: method, headers: map[string]string{
			"x-buildkite-event": event, "x-buildkite-signature": sig, "x-buildkite-token": token, "content-type": ct,
		}, body: string(body), b64: b64}
		if b64 {
			r.body = base64.StdEncoding.EncodeToString(body)
		}
		resp, err := h.Handle(context.Background(), r.event())
		if err != nil {
			t.Fatalf("handler error: %v", err)
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("bad input gave %d: %s", resp.StatusCode, resp.Body)
		}
		if !json.Valid([]byte(resp.Body)) {
			t.Fatalf("response is not JSON: %q", resp.Body)
		}
		// Whatever the input: no log line over 16 KB, no planted address
		// in a log line or a queued message.
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if len(line) > 16<<10 {
				t.Fatalf("log line of %d bytes", len(line))
			}
			if strings.Contains(line, "jane@example.com") {
				t.Fatalf("address in a log line: %.200s", line)
			}
		}
		for _, m := range pub.Messages() {
			if bytes.Contains(m.Body, []byte("jane@example.com")) {
				t.Fatalf("address in a queued message: %.200s", m.Body)
			}
		}
		if resp.StatusCode == 200 && !strings.Contains(resp.Body, "pong") {
			// Nothing forged may queue. A signature, when sent, is what is
			// checked; the fuzzer may respell a real one (hex case, spaces,
			// part order), which stays valid.
			authentic := token == testToken
			if sig != "" {
				authentic = carriesMAC(sig, body)
			}
			if !authentic {
				t.Fatalf("unauthenticated request queued: %s", resp.Body)
			}
		}
	})
}

// carriesMAC is the fuzz oracle, written apart from the code under test:
// whether header holds, in some spelling, the HMAC of "<its timestamp>.<body>"
// under testToken, the only way to produce which is to know the token.
func carriesMAC(header string, body []byte) bool {
	var ts, sig []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch strings.TrimSpace(k) {
		case "timestamp":
			ts = append(ts, strings.TrimSpace(v))
		case "signature":
			sig = append(sig, strings.TrimSpace(v))
		}
	}
	for _, t := range ts {
		mac := hmac.New(sha256.New, []byte(testToken))
		mac.Write([]byte(t + "."))
		mac.Write(body)
		want := mac.Sum(nil)
		for _, s := range sig {
			if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
				return true
			}
		}
	}
	return false
}

func BenchmarkReceiver(b *testing.B) {
	body := testkit.Fixture(b, "build_finished_large.json")
	h := newHandler(b, testkit.Token(testToken), discardPublisher{}, slog.New(slog.NewJSONHandler(discard{}, nil)))
	ev := signed(body, "build.finished").event()
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		resp, _ := h.Handle(ctx, ev)
		if resp.StatusCode != 200 {
			b.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
		}
	}
}

type discardPublisher struct{}

func (discardPublisher) Publish(context.Context, queue.Message) (string, error) {
	return "00000000-0000-0000-0000-000000000000", nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestIsJSON(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "APPLICATION/JSON": true,
		" application/json ;x=y": true, "application/vnd.api+json": true, "application/+json": false,
		"application/jsonx": false, "text/json": false, "text/plain": false, "json": false, "": false,
		"application/x-www-form-urlencoded": false, "multipart/form-data; boundary=x": false,
	} {
		if got := isJSON(ct); got != want {
			t.Errorf("isJSON(%q) = %v, want %v", ct, got, want)
		}
	}
}

// With a Buildkite API token configured, a triggered build whose own branch
// does not alert is queued for the dispatcher to judge by its parent; with
// none, the receiver drops it as before. The observer sees every
// authenticated webhook, dropped or not.
func TestTriggeredBuildsWithTheAPI(t *testing.T) {
	body := testkit.Fixture(t, "build_finished_passed_triggered.json")
	body = bytes.Replace(body, []byte(`"branch": "main"`), []byte(`"branch": "release"`), 1)
	for _, tc := range []struct {
		name   string
		env    map[string]string
		status int
	}{
		{"no token: dropped by its own branch", nil, http.StatusAccepted},
		{"API token: queued for the parent to decide", map[string]string{"BUILDKITE_API_TOKEN": "bkua_x"}, http.StatusOK},
		{"API secret: queued for the parent to decide", map[string]string{"BUILDKITE_API_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:bk"}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := LoadConfig(config.NewReader(config.Map(tc.env)))
			pub := &testkit.Publisher[queue.Message]{}
			h := newHandler(t, testkit.Token(testToken), pub, nil, func(c *Config) { c.Rules = cfg.Rules })
			var seen []string
			h.Observe(func(p *buildkite.Payload) { seen = append(seen, p.Event+" "+p.Build.Branch) })
			resp, _ := h.Handle(context.Background(), signed(body, "").event())
			if resp.StatusCode != tc.status || pub.Len() != map[bool]int{true: 1, false: 0}[tc.status == http.StatusOK] {
				t.Errorf("status %d (%s), %d queued; want %d", resp.StatusCode, resp.Body, pub.Len(), tc.status)
			}
			if len(seen) != 1 || seen[0] != "build.finished release" {
				t.Errorf("observer saw %q, want the one webhook", seen)
			}
		})
	}
}

// The webhook line carries Lambda Powertools' keys: function_request_id,
// cold_start (true on the handler's first invocation only), xray_trace_id;
// durations in milliseconds; and the first invocation counts a ColdStart.
func TestLogKeysAndColdStart(t *testing.T) {
	var logs, emf bytes.Buffer
	h := newHandler(t, testkit.Token(testToken), &testkit.Publisher[queue.Message]{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	h.metrics = metrics.New(&emf, "receiver-test")
	body := testkit.Fixture(t, "build_finished_failed.json")
	for _, id := range []string{"inv-1", "inv-2"} {
		ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: id})
		ctx = context.WithValue(ctx, "x-amzn-trace-id", "Root=1-66b0bf61-36613364306331652d356238;Sampled=0")
		if resp, _ := h.Handle(ctx, signed(body, "build.finished").event()); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, resp.Body)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), logs.String())
	}
	for i, cold := range []bool{true, false} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["function_request_id"] != fmt.Sprintf("inv-%d", i+1) || rec["cold_start"] != cold ||
			rec["xray_trace_id"] != "1-66b0bf61-36613364306331652d356238" {
			t.Errorf("line %d: %s", i+1, lines[i])
		}
		if _, ok := rec["duration_ms"].(float64); !ok {
			t.Errorf("line %d has no duration_ms: %s", i+1, lines[i])
		}
		// request_id is the webhook's, whichever function logs it.
		if rec["request_id"] == nil {
			t.Errorf("line %d has no request_id: %s", i+1, lines[i])
		}
	}
	if n := strings.Count(emf.String(), `"ColdStart":1`); n != 1 {
		t.Errorf("%d ColdStart metrics over two invocations, want 1:\n%s", n, emf.String())
	}
}
