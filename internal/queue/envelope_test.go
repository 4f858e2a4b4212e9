package queue

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

func loadPayload(t *testing.T, name string) *buildkite.Payload {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := buildkite.Parse(body, "")
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return p
}

func TestNewMessageDecodeRoundTrip(t *testing.T) {
	// A receive time with nanoseconds in a non-UTC zone: the envelope keeps
	// it as UTC, to the millisecond.
	received := time.Date(2024, 8, 5, 14, 0, 1, 123456789, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		file, event, group string
	}{
		{"build_finished_failed.json", "build.finished", "acme/deploy-api/main"},
		{"job_finished_failed.json", "job.finished", "acme/deploy-api/main#test"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p := loadPayload(t, tc.file)
			m, err := NewMessage(p, tc.group, "req-123", received)
			if err != nil {
				t.Fatal(err)
			}
			if m.GroupID != tc.group {
				t.Errorf("GroupID = %q, want %q", m.GroupID, tc.group)
			}
			if m.DedupID != DedupID(p) {
				t.Errorf("DedupID = %q, want DedupID(p) = %q", m.DedupID, DedupID(p))
			}
			if b, err := hex.DecodeString(m.DedupID); err != nil || len(b) != 32 {
				t.Errorf("DedupID %q is not 64 hex digits of SHA-256", m.DedupID)
			}
			// The queue must never carry the secrets the raw webhooks hold.
			if bytes.Contains(m.Body, []byte("SECRET")) {
				t.Errorf("message body carries a secret from the webhook: %s", m.Body)
			}

			e, err := Decode(m.Body)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if e.V != Version || e.Event != tc.event || e.RequestID != "req-123" {
				t.Errorf("envelope = v%d %q %q, want v%d %q %q", e.V, e.Event, e.RequestID, Version, tc.event, "req-123")
			}
			wantAt := time.Date(2024, 8, 5, 12, 0, 1, 123000000, time.UTC)
			if !e.ReceivedAt.Equal(wantAt) || e.ReceivedAt.Location() != time.UTC {
				t.Errorf("ReceivedAt = %v, want %v", e.ReceivedAt, wantAt)
			}
			if !reflect.DeepEqual(e.Payload, p) {
				got, _ := json.Marshal(e.Payload)
				want, _ := json.Marshal(p)
				t.Errorf("payload changed in the round trip:\n got %s\nwant %s", got, want)
			}
			if DedupID(e.Payload) != m.DedupID {
				t.Error("DedupID of the decoded payload differs from the message's")
			}
		})
	}
}

func TestEnvelopeKeys(t *testing.T) {
	p := loadPayload(t, "build_finished_failed.json")
	m, err := NewMessage(p, "g", "", time.Unix(1722859200, 0))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m.Body, &obj); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"event", "payload", "received_at", "request_id", "v"}; !slices.Equal(keys, want) {
		t.Errorf("envelope keys = %v, want exactly %v", keys, want)
	}
	if string(obj["v"]) != "1" {
		t.Errorf("v = %s, want 1", obj["v"])
	}
	if string(obj["request_id"]) != `""` {
		t.Errorf("request_id = %s, want an empty string (present even when empty)", obj["request_id"])
	}
	var at string
	if err := json.Unmarshal(obj["received_at"], &at); err != nil {
		t.Fatalf("received_at is not a string: %s", obj["received_at"])
	}
	if _, err := time.Parse(time.RFC3339, at); err != nil || !strings.HasSuffix(at, "Z") {
		t.Errorf("received_at = %q, want RFC3339 in UTC", at)
	}
}

func TestDedupID(t *testing.T) {
	base := func() *buildkite.Payload {
		return &buildkite.Payload{
			Event: "job.finished",
			Build: &buildkite.Build{
				ID: "0191225a-2f1c-7b6e-9d0a-3c5f1e7b8a90", Number: 1234, State: "failing",
				Message: "Fix flaky test", Branch: "main", Commit: "abc123",
				WebURL: "https://buildkite.com/acme/deploy-api/builds/1234",
			},
			Job: &buildkite.Job{
				ID: "0191225a-3a40-7c7f-8e21-6b9d2f4c1a07", Name: "test", StepKey: "test",
				State: "failed", RetriesCount: 1,
			},
			Pipeline: &buildkite.Pipeline{Slug: "deploy-api", DefaultBranch: "main"},
		}
	}
	ref := DedupID(base())
	if ref != DedupID(base()) {
		t.Fatal("DedupID is not deterministic")
	}

	same := map[string]func(p *buildkite.Payload){
		"build message": func(p *buildkite.Payload) { p.Build.Message = "something else" },
		"build number":  func(p *buildkite.Payload) { p.Build.Number = 99 },
		"branch":        func(p *buildkite.Payload) { p.Build.Branch = "other" },
		"commit":        func(p *buildkite.Payload) { p.Build.Commit = "def456" },
		"build times":   func(p *buildkite.Payload) { p.Build.FinishedAt = buildkite.Time{Time: time.Now()} },
		"job name":      func(p *buildkite.Payload) { p.Job.Name = "lint" },
		"job exit":      func(p *buildkite.Payload) { one := 1; p.Job.ExitStatus = &one },
		"soft failed":   func(p *buildkite.Payload) { p.Job.SoftFailed = true },
		"pipeline":      func(p *buildkite.Payload) { p.Pipeline = nil },
	}
	for name, mutate := range same {
		p := base()
		mutate(p)
		if got := DedupID(p); got != ref {
			t.Errorf("%s changed: DedupID changed too, but it is not part of the event identity", name)
		}
	}

	differ := map[string]func(p *buildkite.Payload){
		"event":         func(p *buildkite.Payload) { p.Event = "build.finished" },
		"build id":      func(p *buildkite.Payload) { p.Build.ID += "x" },
		"build state":   func(p *buildkite.Payload) { p.Build.State = "failed" },
		"blocked":       func(p *buildkite.Payload) { p.Build.Blocked = true },
		"job id":        func(p *buildkite.Payload) { p.Job.ID += "x" },
		"job state":     func(p *buildkite.Payload) { p.Job.State = "passed" },
		"retries count": func(p *buildkite.Payload) { p.Job.RetriesCount = 2 },
		"no job":        func(p *buildkite.Payload) { p.Job = nil },
		// The event's own time: a job retried to green and failing again
		// is a new event, not a redelivery.
		"job finished_at": func(p *buildkite.Payload) { p.Job.FinishedAt = buildkite.Time{Time: time.Unix(1722859200, 0)} },
		"no build":        func(p *buildkite.Payload) { p.Build = nil },
		// Length prefixes keep field boundaries: moving characters from one
		// field to the next must not give the same identity.
		"boundary": func(p *buildkite.Payload) {
			p.Event, p.Build.ID = p.Event+p.Build.ID[:1], p.Build.ID[1:]
		},
	}
	seen := map[string]string{ref: "base"}
	for name, mutate := range differ {
		p := base()
		mutate(p)
		got := DedupID(p)
		if prev, dup := seen[got]; dup {
			t.Errorf("%s changed: DedupID equals that of %s", name, prev)
		}
		seen[got] = name
	}
}

// Which time is the event's own, per event: a build that fails, passes on a
// retry and fails again within SQS's 5-minute window sends a second
// build.finished that differs only in finished_at; a redelivery differs in
// nothing.
func TestDedupIDEventTime(t *testing.T) {
	t1, t2 := buildkite.Time{Time: time.Unix(1722859200, 0)}, buildkite.Time{Time: time.Unix(1722859260, 0)}
	build := func(event string, finished, failing buildkite.Time) *buildkite.Payload {
		return &buildkite.Payload{Event: event, Build: &buildkite.Build{ID: "b", State: "failed", FinishedAt: finished, FailingAt: failing}}
	}
	for _, tc := range []struct {
		name string
		a, b *buildkite.Payload
		same bool
	}{
		{"redelivery of build.finished", build("build.finished", t1, t1), build("build.finished", t1, t1), true},
		{"failed again after a retry passed", build("build.finished", t1, t1), build("build.finished", t2, t1), false},
		{"build.finished ignores failing_at", build("build.finished", t1, t1), build("build.finished", t1, t2), true},
		{"build.failing is timed by failing_at", build("build.failing", t1, t1), build("build.failing", t1, t2), false},
		{"build.failing ignores finished_at", build("build.failing", t1, t1), build("build.failing", t2, t1), true},
	} {
		if got := DedupID(tc.a) == DedupID(tc.b); got != tc.same {
			t.Errorf("%s: same identity = %v, want %v", tc.name, got, tc.same)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name        string
		body        string
		wantVersion bool // errors.Is(err, ErrUnknownVersion)
	}{
		{"version 2", `{"v":2,"event":"build.finished","payload":{"event":"build.finished"}}`, true},
		{"version 0", `{"v":0,"event":"build.finished","payload":{"event":"build.finished"}}`, true},
		{"no version", `{"event":"build.finished","payload":{"event":"build.finished"}}`, true},
		{"not JSON", `v=1&event=build.finished`, false},
		{"empty", ``, false},
		{"array", `[1]`, false},
		{"truncated", `{"v":1,"event":"build.finished","payload":{"ev`, false},
		{"v not a number", `{"v":"1","event":"build.finished","payload":{}}`, true},
		{"version 2 of another shape", `{"v":2,"payload":{"build":"x"}}`, true},
		{"version 2 as a string", `{"v":"2"}`, true},
		{"no version, another shape", `{"payload":{"build":"x"}}`, true},
		{"version 1 of another shape", `{"v":1,"event":"build.finished","payload":{"build":"x"}}`, false},
		{"missing payload", `{"v":1,"event":"build.finished","request_id":"r","received_at":"2024-08-05T12:00:00Z"}`, false},
		{"null payload", `{"v":1,"event":"build.finished","payload":null}`, false},
		{"payload not an object", `{"v":1,"event":"build.finished","payload":"x"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode([]byte(tc.body))
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tc.body, e)
			}
			if got := errors.Is(err, ErrUnknownVersion); got != tc.wantVersion {
				t.Errorf("errors.Is(%v, ErrUnknownVersion) = %v, want %v", err, got, tc.wantVersion)
			}
		})
	}
	// The error is logged: a huge "v" must not make a huge line.
	_, err := Decode([]byte(`{"v":"` + strings.Repeat("9", 1<<20) + `"}`))
	if !errors.Is(err, ErrUnknownVersion) || len(err.Error()) > 200 {
		t.Errorf("huge v: %d-byte error (%v), want a short ErrUnknownVersion", len(err.Error()), errors.Is(err, ErrUnknownVersion))
	}
}

func TestDecodeFillsPayloadEvent(t *testing.T) {
	e, err := Decode([]byte(`{"v":1,"event":"build.finished","request_id":"r","received_at":"2024-08-05T12:00:00Z","payload":{"build":{"id":"b","state":"failed"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if e.Payload.Event != "build.finished" {
		t.Errorf("payload event = %q, want the envelope's %q", e.Payload.Event, "build.finished")
	}
	if e.Payload.Build == nil || e.Payload.Build.State != "failed" {
		t.Errorf("payload build = %+v", e.Payload.Build)
	}
}

func TestNotedMessage(t *testing.T) {
	p := loadPayload(t, "build_finished_failed.json")
	p.Build.State = "passed"
	n := Note{Origin: OriginReconciler, Reason: "a newer build passed"}
	m, err := NewNotedMessage(p, "acme/deploy-api/main", "reconciler-r1", time.Unix(1722859200, 0), n)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewMessage(p, "acme/deploy-api/main", "reconciler-r1", time.Unix(1722859200, 0))
	if err != nil {
		t.Fatal(err)
	}
	if m.DedupID != plain.DedupID || m.GroupID != plain.GroupID {
		t.Errorf("the note changed the FIFO attributes: %+v vs %+v", m, plain)
	}
	e, err := Decode(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	if e.Origin != OriginReconciler || e.Reason != n.Reason || e.Payload.Build.State != "passed" {
		t.Errorf("decoded %+v", e)
	}
	// A v1 reader built before the fields existed: unknown keys are ignored.
	var old struct {
		V       int             `json:"v"`
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
	}
	dec := json.NewDecoder(strings.NewReader(string(m.Body)))
	if err := dec.Decode(&old); err != nil || old.V != 1 || old.Event != "build.finished" || len(old.Payload) == 0 {
		t.Errorf("a v1 reader: %+v, %v", old, err)
	}
	if e, _ := Decode(plain.Body); e.Origin != "" || e.Reason != "" || strings.Contains(string(plain.Body), "origin") {
		t.Errorf("a webhook message carries a note: %s", plain.Body)
	}
}
