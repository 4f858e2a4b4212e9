package buildkite

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRedactEmails(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"jane@example.com", "[email]"},
		{"<jane@example.com>", "<[email]>"},
		{"Jane Doe (jane.doe+ci@mail.example.co.uk)", "Jane Doe ([email])"},
		{"mail jane@example.com.", "mail [email]."},
		{"a@b.com and c@d.org", "[email] and [email]"},
		{"npm@10.2.0", "npm@10.2.0"},       // a version, not an address
		{"@v2", "@v2"},                     // no local part
		{"build@main", "build@main"},       // no dot in the domain
		{"x@y.c", "x@y.c"},                 // one-letter top-level label
		{"user@host.123", "user@host.123"}, // numeric last label
		{"no at sign", "no at sign"},
		{"", ""},
		{"@@jane@example.com@", "@@[email]@"},
	} {
		if got := RedactEmails(tc.in); got != tc.want {
			t.Errorf("RedactEmails(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIdent(t *testing.T) {
	long := strings.Repeat("feature/", 50_000) // 400 KB
	a, b := Ident(long+"a"), Ident(long+"b")
	for _, s := range []string{a, b} {
		if len(s) > MaxIdent || !utf8.ValidString(s) {
			t.Errorf("Ident(400 KB) = %d bytes (valid UTF-8 %v), want ≤ %d", len(s), utf8.ValidString(s), MaxIdent)
		}
		if !strings.HasPrefix(s, "feature/feature/") {
			t.Errorf("Ident lost the readable prefix: %q", s[:20])
		}
	}
	if a == b {
		t.Error("two long identifiers with one prefix collide")
	}
	if Ident(a) != a {
		t.Error("Ident is not idempotent")
	}
	if got := Ident("main"); got != "main" {
		t.Errorf("Ident(main) = %q", got)
	}
	multi := strings.Repeat("é", 200) // 400 bytes of 2-byte runes
	if s := Ident(multi); len(s) > MaxIdent || !utf8.ValidString(s) {
		t.Errorf("Ident cut a rune: %q", s)
	}
}

// Every caller string of a parsed payload is bounded, and no name field
// keeps an address, whatever the body holds.
func TestParseBoundsAndScrubsEveryField(t *testing.T) {
	huge := strings.Repeat("x", 400<<10)
	email := "jane@example.com"
	body := map[string]any{
		"event": "build.finished",
		"build": map[string]any{
			"id": huge, "url": "https://api.buildkite.com/" + huge, "web_url": "https://buildkite.com/" + huge,
			"number": 1, "state": "failed" + huge, "message": huge, "commit": huge, "branch": huge, "source": huge,
			"author":         map[string]any{"name": "Jane " + email + " " + huge, "username": email},
			"pull_request":   map[string]any{"id": huge, "base": huge, "repository": "git@github.com:acme/x.git"},
			"rebuilt_from":   map[string]any{"id": huge, "number": 3},
			"triggered_from": map[string]any{"build_id": huge, "build_number": 2, "build_pipeline_slug": huge},
		},
		"job": map[string]any{
			"id": huge, "type": huge, "name": "rspec " + email + huge, "label": email, "step_key": email + huge,
			"state": huge, "web_url": huge, "signal_reason": huge,
			"retry_source": map[string]any{"job_id": huge, "retry_type": huge},
		},
		"pipeline": map[string]any{
			"id": huge, "url": huge, "web_url": huge, "name": email + " pipeline", "slug": huge, "default_branch": huge,
		},
	}
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "@") {
		t.Errorf("an address survived: %s", out)
	}
	// The whole trimmed payload, every field at its bound, stays small.
	if len(out) > 12<<10 {
		t.Errorf("trimmed payload is %d bytes, want ≤ 12 KB", len(out))
	}
	walkStrings(t, reflect.ValueOf(p), "payload")
	if p.Build.Author.Username != "" {
		t.Errorf("username that is an address kept: %q", p.Build.Author.Username)
	}
	if !strings.HasPrefix(p.Build.Author.Name, "Jane [email] ") {
		t.Errorf("author name = %.30q, want the address redacted, the name kept", p.Build.Author.Name)
	}
	if p.Job.Label != "[email]" || !strings.HasPrefix(p.Job.StepKey, "[email]") {
		t.Errorf("job label %q, step key %.20q: want the address redacted", p.Job.Label, p.Job.StepKey)
	}
	if p.OrgSlug() == "" || len(p.OrgSlug()) > MaxIdent || len(p.PipelineSlug()) > MaxIdent {
		t.Errorf("slugs %d/%d bytes, want ≤ %d", len(p.OrgSlug()), len(p.PipelineSlug()), MaxIdent)
	}
	// Idempotent: the dispatcher sanitizes what the receiver sanitized.
	again := *p
	again.Sanitize()
	if out2, _ := json.Marshal(&again); string(out2) != string(out) {
		t.Error("Sanitize is not idempotent")
	}
}

// walkStrings checks every string field reachable from v against the
// largest bound.
func walkStrings(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkStrings(t, v.Elem(), path)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				walkStrings(t, v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		}
	case reflect.String:
		if n := len(v.String()); n > maxURL {
			t.Errorf("%s is %d bytes, over every bound", path, n)
		}
	}
}

// The fields the state store, the REST API features and the rules need
// survive trimming; the pull request's repository (a clone URL) does not.
func TestParseKeepsOrderAndOriginFields(t *testing.T) {
	two := 2
	four := 4
	for _, tc := range []struct {
		fixture string
		check   func(*Payload) bool
	}{
		{"build_finished_failed_fork_pr.json", func(p *Payload) bool {
			return p.Build.IsPullRequest() && *p.Build.PullRequest == PullRequest{ID: "42", Base: "main"}
		}},
		{"build_finished_failed.json", func(p *Payload) bool {
			return !p.Build.IsPullRequest() && p.Build.Source == "webhook" && p.Pipeline.ID == "018f0c3e-8b2a-4d41-9f3c-2a6e5d7b1c90"
		}},
		{"build_finished_failed_rebuild.json", func(p *Payload) bool {
			return p.Build.RebuiltFrom != nil && p.Build.RebuiltFrom.Number == 1230 && p.Build.Source == "ui"
		}},
		{"build_finished_passed_triggered.json", func(p *Payload) bool {
			return p.Build.TriggeredFrom != nil && *p.Build.TriggeredFrom == TriggeredFrom{
				BuildID: "0191225a-0000-7000-8000-000000000001", BuildNumber: 5678, BuildPipelineSlug: "web-app"}
		}},
		{"job_finished_failed_parallel.json", func(p *Payload) bool {
			j := p.Job
			return j.ParallelGroupIndex != nil && *j.ParallelGroupIndex == two-1 && *j.ParallelGroupTotal == four
		}},
		{"job_finished_failed.json", func(p *Payload) bool { return p.Job.ParallelGroupIndex == nil }},
		{"job_finished_failed_retried.json", func(p *Payload) bool { return p.Job.Retried }},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			p := parseFixture(t, tc.fixture)
			// Through the queue and back, as the dispatcher reads it.
			b, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "repository") || strings.Contains(string(b), "git@") {
				t.Errorf("repository survived: %s", b)
			}
			var q Payload
			if err := json.Unmarshal(b, &q); err != nil {
				t.Fatal(err)
			}
			if !tc.check(p) || !tc.check(&q) {
				t.Errorf("fields lost: parsed %s", b)
			}
		})
	}
	// A numeric pull-request id (some providers) reads as its digits.
	p, err := Parse([]byte(`{"event":"build.finished","build":{"pull_request":{"id":123,"base":"main"}}}`), "")
	if err != nil || !p.Build.IsPullRequest() || p.Build.PullRequest.ID != "123" {
		t.Errorf("numeric pull_request.id: %+v, %v", p.Build.PullRequest, err)
	}
	for _, empty := range []string{`null`, `{}`, `{"id":null}`, `{"id":""}`} {
		p, err := Parse([]byte(`{"event":"build.finished","build":{"pull_request":`+empty+`}}`), "")
		if err != nil || p.Build.IsPullRequest() {
			t.Errorf("pull_request %s: IsPullRequest %v, %v; want a branch build", empty, p.Build.IsPullRequest(), err)
		}
	}
	if _, err := Parse([]byte(`{"event":"build.finished","build":{"pull_request":{"id":[1]}}}`), ""); err == nil {
		t.Error("pull_request.id array: want an error")
	}
}
