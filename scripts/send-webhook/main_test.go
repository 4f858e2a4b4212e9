package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

// The signatures this tool makes verify with the receiver's own check.
func TestSendsWhatTheReceiverAccepts(t *testing.T) {
	auth := buildkite.Authenticator{MaxAge: time.Minute, AllowToken: true}
	var got struct{ event, status string }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.event = r.Header.Get("X-Buildkite-Event")
		if err := auth.Verify([]string{"tok"}, r.Header.Get("X-Buildkite-Token"), r.Header.Get("X-Buildkite-Signature"), body); err != nil {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"unauthorized"}`)
			return
		}
		io.WriteString(w, `{"status":"queued","id":"1"}`)
	}))
	defer srv.Close()
	fixture := filepath.Join("..", "..", "internal", "buildkite", "testdata", "build_finished_failed.json")
	legacy := filepath.Join("..", "..", "internal", "buildkite", "testdata", "legacy_project.json")

	tests := []struct {
		name      string
		args      []string
		stdin     string
		code      int
		out       string
		wantEvent string
	}{
		{"signature", []string{"-url", srv.URL, "-token", "tok", fixture}, "", 0, `200 {"status":"queued","id":"1"}`, "build.finished"},
		{"token mode", []string{"-url", srv.URL, "-token", "tok", "-mode", "token", fixture}, "", 0, "200 ", "build.finished"},
		{"wrong token", []string{"-url", srv.URL, "-token", "bad", fixture}, "", 1, "401 ", "build.finished"},
		// A rotation value, as BUILDKITE_WEBHOOK_TOKEN may hold: signed with the first.
		{"rotation value, signature", []string{"-url", srv.URL, "-token", "tok\nnext", fixture}, "", 0, "200 ", "build.finished"},
		{"rotation value, token mode", []string{"-url", srv.URL, "-token", " tok \r\nnext\n", "-mode", "token", fixture}, "", 0, "200 ", "build.finished"},
		{"blank token", []string{"-url", srv.URL, "-token", " \n ", fixture}, "", 2, "", ""},
		{"stdin with -event", []string{"-url", srv.URL, "-token", "tok", "-event", "build.finished", "-"}, `{"build":{}}`, 0, "200 ", "build.finished"},
		{"legacy needs -event", []string{"-url", srv.URL, "-token", "tok", legacy}, "", 2, "", ""},
		{"no file", []string{"-url", srv.URL}, "", 2, "", ""},
		{"bad mode", []string{"-url", srv.URL, "-mode", "x", fixture}, "", 2, "", ""},
		// Function URL events (events/receiver-*.json): their body and headers.
		{"function URL event, its plain token", []string{"-url", srv.URL, urlEvent(t, "tok", false)}, "", 0, "200 ", "build.failing"},
		{"function URL event, base64 body", []string{"-url", srv.URL, urlEvent(t, "tok", true)}, "", 0, "200 ", "build.failing"},
		{"function URL event, signed anew with -token", []string{"-url", srv.URL, "-token", "tok", urlEvent(t, "stale", false)}, "", 0, "200 ", "build.failing"},
		{"function URL event, wrong token", []string{"-url", srv.URL, urlEvent(t, "bad", false)}, "", 1, "401 ", "build.failing"},
		{"not JSON", []string{"-url", srv.URL, writeFile(t, "x.json", "event=build.finished")}, "", 2, "", ""},
		{"JSON but not an object", []string{"-url", srv.URL, writeFile(t, "x.json", `["build.finished"]`)}, "", 2, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got.event = ""
			var out, errb bytes.Buffer
			code := run(tc.args, strings.NewReader(tc.stdin), &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %s)", code, tc.code, errb.String())
			}
			if !strings.HasPrefix(out.String(), tc.out) {
				t.Errorf("stdout %q, want prefix %q", out.String(), tc.out)
			}
			if got.event != tc.wantEvent {
				t.Errorf("event header %q, want %q", got.event, tc.wantEvent)
			}
			if code == 2 && !strings.Contains(errb.String(), "send-webhook") && !strings.Contains(errb.String(), "usage") {
				t.Errorf("exit 2 without a message: %q", errb.String())
			}
			if strings.HasPrefix(out.String(), "401") != strings.Contains(errb.String(), "make dev prints the token") {
				t.Errorf("401 hint: stdout %q, stderr %q", out.String(), errb.String())
			}
		})
	}
	var errb bytes.Buffer
	if code := run([]string{writeFile(t, "x.json", "not json")}, nil, io.Discard, &errb); code != 2 || !strings.Contains(errb.String(), "not JSON") {
		t.Errorf("non-JSON file: exit %d, stderr %q; want 2 and a clear error", code, errb.String())
	}
}

// urlEvent writes a function URL event like events/receiver-*.json: a
// build.failing with the plain token tok in its headers.
func urlEvent(t *testing.T, tok string, b64 bool) string {
	t.Helper()
	body := `{"event":"build.failing","build":{"state":"failing"}}`
	ev := map[string]any{
		"version": "2.0", "rawPath": "/", "isBase64Encoded": b64, "body": body,
		"headers": map[string]string{
			"content-type": "application/json", "x-buildkite-event": "build.failing", "x-buildkite-token": tok,
			"host": "x.lambda-url.us-east-1.on.aws", "content-length": "999", "x-forwarded-for": "100.24.0.10",
		},
		"requestContext": map[string]any{"http": map[string]any{"method": "POST"}},
	}
	if b64 {
		ev["body"] = base64.StdEncoding.EncodeToString([]byte(body))
	}
	b, _ := json.Marshal(ev)
	return writeFile(t, "event.json", string(b))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// With no -url and no WEBHOOK_URL, the tool goes where make dev listens.
func TestFollowsDevAddr(t *testing.T) {
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++; io.WriteString(w, `{"status":"pong"}`) }))
	defer srv.Close()
	t.Setenv("WEBHOOK_URL", "")
	t.Setenv("DEV_ADDR", strings.TrimPrefix(srv.URL, "http://"))
	var out, errb bytes.Buffer
	if code := run([]string{"-event", "ping", "-"}, strings.NewReader(`{}`), &out, &errb); code != 0 || hits != 1 {
		t.Errorf("exit %d, %d requests to DEV_ADDR (stderr %s)", code, hits, errb.String())
	}
}
