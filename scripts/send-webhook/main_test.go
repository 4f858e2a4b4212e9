package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
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
		})
	}
}
