package buildkite

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Sentinels planted in testdata (see testdata/README.md). None may survive
// Parse + json.Marshal.
var sentinels = []string{
	"SECRET-PIPELINE-ENV",
	"SECRET-BUILD-ENV",
	"SECRET-PROVIDER-HOOK",
	"SECRET-AGENT-TOKEN",
	"SECRET-STEP-COMMAND",
	"jane@example.com",
	"git@github.com:acme/deploy-api.git",
}

// Keys that carry secrets or personal data in a Buildkite body and must not
// appear anywhere in a trimmed payload.
var forbiddenKeys = []string{"env", "steps", "configuration", "provider", "agent", "email", "repository"}

const (
	webURL = "https://buildkite.com/acme/deploy-api/builds/1234"
	apiURL = "https://api.buildkite.com/v2/organizations/acme/pipelines/deploy-api/builds/1234"
	commit = "abc123f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixtureNames(t testing.TB) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no fixtures in testdata")
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	sort.Strings(names)
	return names
}

// legacyFixtures lack the "event" key: they only parse with the header.
var legacyFixtures = map[string]string{"legacy_project.json": "build.finished"}

// parseFixture parses a fixture as it would arrive: with the header for
// bodies that have no "event" key, without it otherwise.
func parseFixture(t testing.TB, name string) *Payload {
	t.Helper()
	p, err := Parse(readFixture(t, name), legacyFixtures[name])
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return p
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

type jobWant struct {
	id, typ, name, stepKey, state, signalReason string
	exit                                        *int
	softFailed                                  bool
	retries                                     int
	retrySource                                 *RetrySource
}

func intp(i int) *int { return &i }

type fixtureWant struct {
	event, state, branch             string
	blocked                          bool
	author, username                 string // Author.Display() and Username
	finishedAt, failingAt, startedAt time.Time
	job                              *jobWant
	noBuild                          bool // ping: no build, pipeline or job
	nullMessage, nullDefaultBranch   bool // nulls.json
}

const (
	jobID   = "0191225a-3a40-7c7f-8e21-6b9d2f4c1a07"
	retryID = "0191226b-0c11-7e4f-9a2b-5d6e7f801234"
)

var (
	tFinished = mustTime("2024-08-05T12:00:00.000Z")
	tFailing  = mustTime("2024-08-05T11:58:41.000Z")
	tStarted  = mustTime("2024-08-05T11:50:07.415Z")
)

// fixtureWants is what each fixture must parse to. Every file in testdata
// must have an entry (TestParseFixtures checks), so a new fixture is tested.
var fixtureWants = map[string]fixtureWant{
	"build_finished_failed.json": {event: "build.finished", state: "failed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	// Passed ten minutes after build_finished_failed.json failed: the same
	// build made to pass by a retry, so it is newer in the incident state.
	"build_finished_passed.json": {event: "build.finished", state: "passed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: mustTime("2024-08-05T12:10:00.000Z"), startedAt: tStarted},
	"build_failing.json": {event: "build.failing", state: "failing", branch: "main", author: "Jane Doe", username: "jane",
		failingAt: tFailing, startedAt: tStarted},
	"build_finished_canceled.json": {event: "build.finished", state: "canceled", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: mustTime("2024-08-05T11:55:12Z"), startedAt: tStarted},
	"build_finished_blocked.json": {event: "build.finished", state: "passed", blocked: true, branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: mustTime("2024-08-05T11:56:30Z"), startedAt: tStarted},
	"build_finished_skipped.json": {event: "build.finished", state: "skipped", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: mustTime("2024-08-05T11:50:02Z")},
	"build_finished_not_run.json": {event: "build.finished", state: "not_run", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: mustTime("2024-08-05T11:50:01Z")},
	"build_scheduled.json": {event: "build.scheduled", state: "scheduled", branch: "main", author: "Jane Doe", username: "jane"},
	"build_running.json":   {event: "build.running", state: "running", branch: "main", author: "Jane Doe", username: "jane", startedAt: tStarted},
	"build_finished_feature_branch.json": {event: "build.finished", state: "failed", branch: "feature/x", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"build_finished_large.json": {event: "build.finished", state: "failed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"author_string.json": {event: "build.finished", state: "failed", branch: "main", author: "Jane Doe",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"nulls.json": {event: "build.finished", state: "passed", branch: "main", nullMessage: true, nullDefaultBranch: true, startedAt: tStarted},
	"legacy_project.json": {event: "build.finished", state: "failed", branch: "main",
		finishedAt: mustTime("2018-07-01T20:14:38Z"), startedAt: mustTime("2018-07-01T20:10:05Z")},
	"ping.json": {event: "ping", noBuild: true},

	"job_finished_failed.json": {event: "job.finished", state: "failing", branch: "main", author: "Jane Doe", username: "jane",
		failingAt: tFailing, startedAt: tStarted,
		job: &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "failed", exit: intp(1)}},
	"job_finished_soft_failed.json": {event: "job.finished", state: "running", branch: "main", author: "Jane Doe", username: "jane",
		startedAt: tStarted,
		job:       &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "failed", exit: intp(1), softFailed: true}},
	"job_finished_timed_out.json": {event: "job.finished", state: "failing", branch: "main", author: "Jane Doe", username: "jane",
		failingAt: mustTime("2024-08-05T12:20:07Z"), startedAt: tStarted,
		job: &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "timed_out", exit: intp(-1)}},
	"job_finished_agent_lost.json": {event: "job.finished", state: "failing", branch: "main", author: "Jane Doe", username: "jane",
		failingAt: mustTime("2024-08-05T11:57:02Z"), startedAt: tStarted,
		job: &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "failed", exit: intp(-1), signalReason: "agent_lost"}},
	"job_finished_passed_retry.json": {event: "job.finished", state: "running", branch: "main", author: "Jane Doe", username: "jane",
		startedAt: tStarted,
		job: &jobWant{id: retryID, typ: "script", name: ":go: test", stepKey: "test", state: "passed", exit: intp(0),
			retries: 1, retrySource: &RetrySource{JobID: jobID, RetryType: "manual"}}},
	"build_failing_late_passed.json": {event: "build.failing", state: "passed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"build_finished_failed_fork_pr.json": {event: "build.finished", state: "failed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"build_finished_failed_rebuild.json": {event: "build.finished", state: "failed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"build_finished_passed_triggered.json": {event: "build.finished", state: "passed", branch: "main", author: "Jane Doe", username: "jane",
		finishedAt: tFinished, startedAt: tStarted},
	"author_email_username.json": {event: "build.finished", state: "failed", branch: "main", author: "", username: "",
		finishedAt: tFinished, failingAt: tFailing, startedAt: tStarted},
	"job_finished_failed_retried.json": {event: "job.finished", state: "failing", branch: "main", author: "Jane Doe", username: "jane",
		failingAt: tFailing, startedAt: tStarted,
		job: &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "failed", exit: intp(1)}},
	"job_finished_failed_parallel.json": {event: "job.finished", state: "failing", branch: "main", author: "Jane Doe", username: "jane",
		failingAt: tFailing, startedAt: tStarted,
		job: &jobWant{id: jobID, typ: "script", name: ":rspec: rspec", stepKey: "rspec", state: "failed", exit: intp(1)}},
	"job_finished_broken.json": {event: "job.finished", state: "running", branch: "main", author: "Jane Doe", username: "jane",
		startedAt: tStarted, job: &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "broken"}},
	"job_finished_skipped.json": {event: "job.finished", state: "running", branch: "main", author: "Jane Doe", username: "jane",
		startedAt: tStarted, job: &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "skipped"}},
	"job_finished_passed_auto_retry.json": {event: "job.finished", state: "running", branch: "main", author: "Jane Doe", username: "jane",
		startedAt: tStarted,
		job: &jobWant{id: retryID, typ: "script", name: ":go: test", stepKey: "test", state: "passed", exit: intp(0),
			retries: 1, retrySource: &RetrySource{JobID: jobID, RetryType: "automatic"}}},
	"job_finished_passed.json": {event: "job.finished", state: "running", branch: "main", author: "Jane Doe", username: "jane",
		startedAt: tStarted,
		job:       &jobWant{id: jobID, typ: "script", name: ":go: test", stepKey: "test", state: "passed", exit: intp(0)}},
}

func TestParseFixtures(t *testing.T) {
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			w, ok := fixtureWants[name]
			if !ok {
				t.Fatalf("no expectations for %s in fixtureWants", name)
			}
			p := parseFixture(t, name)
			if p.Event != w.event {
				t.Errorf("Event = %q, want %q", p.Event, w.event)
			}
			if w.noBuild {
				if p.Build != nil || p.Pipeline != nil || p.Job != nil {
					t.Errorf("ping parsed with build/pipeline/job: %+v", p)
				}
				if p.OrgSlug() != "" || p.PipelineSlug() != "" {
					t.Errorf("slugs = %q/%q, want empty", p.OrgSlug(), p.PipelineSlug())
				}
				return
			}
			b := p.Build
			if b == nil || p.Pipeline == nil {
				t.Fatalf("Build or Pipeline missing: %+v", p)
			}
			if b.Number != 1234 || b.State != w.state || b.Branch != w.branch || b.Blocked != w.blocked {
				t.Errorf("build = #%d %s %s blocked=%v, want #1234 %s %s blocked=%v",
					b.Number, b.State, b.Branch, b.Blocked, w.state, w.branch, w.blocked)
			}
			if b.Commit != commit {
				t.Errorf("Commit = %q", b.Commit)
			}
			wantMsg := "Fix flaky test" // only the subject line is kept
			if w.nullMessage {
				wantMsg = ""
			}
			if b.Message != wantMsg {
				t.Errorf("Message = %q, want %q", b.Message, wantMsg)
			}
			if b.WebURL != webURL {
				t.Errorf("WebURL = %q", b.WebURL)
			}
			if got := b.Author.Display(); got != w.author {
				t.Errorf("Author.Display() = %q, want %q", got, w.author)
			}
			if b.Author != nil && b.Author.Username != w.username {
				t.Errorf("Author.Username = %q, want %q", b.Author.Username, w.username)
			}
			for _, tc := range []struct {
				field     string
				got, want time.Time
			}{
				{"finished_at", b.FinishedAt.Time, w.finishedAt},
				{"failing_at", b.FailingAt.Time, w.failingAt},
				{"started_at", b.StartedAt.Time, w.startedAt},
			} {
				if !tc.got.Equal(tc.want) {
					t.Errorf("%s = %v, want %v", tc.field, tc.got, tc.want)
				}
				if !tc.got.IsZero() && tc.got.Location() != time.UTC {
					t.Errorf("%s location = %v, want UTC", tc.field, tc.got.Location())
				}
			}
			wantDefault := "main"
			if w.nullDefaultBranch {
				wantDefault = ""
			}
			if p.Pipeline.DefaultBranch != wantDefault || p.Pipeline.Slug != "deploy-api" {
				t.Errorf("pipeline = %q default %q", p.Pipeline.Slug, p.Pipeline.DefaultBranch)
			}
			if p.OrgSlug() != "acme" || p.PipelineSlug() != "deploy-api" {
				t.Errorf("slugs = %q/%q, want acme/deploy-api", p.OrgSlug(), p.PipelineSlug())
			}
			checkJob(t, p.Job, w.job)
		})
	}
}

func checkJob(t *testing.T, got *Job, w *jobWant) {
	t.Helper()
	if w == nil {
		if got != nil {
			t.Errorf("Job = %+v, want nil", got)
		}
		return
	}
	if got == nil {
		t.Fatal("Job is nil")
	}
	if got.ID != w.id || got.Type != w.typ || got.Name != w.name || got.StepKey != w.stepKey || got.State != w.state {
		t.Errorf("job = %s %s %q key %q %s, want %s %s %q key %q %s",
			got.ID, got.Type, got.Name, got.StepKey, got.State, w.id, w.typ, w.name, w.stepKey, w.state)
	}
	if (got.ExitStatus == nil) != (w.exit == nil) || (got.ExitStatus != nil && *got.ExitStatus != *w.exit) {
		t.Errorf("ExitStatus = %v, want %v", got.ExitStatus, w.exit)
	}
	if got.SoftFailed != w.softFailed || got.SignalReason != w.signalReason || got.RetriesCount != w.retries {
		t.Errorf("soft_failed=%v signal_reason=%q retries=%d, want %v %q %d",
			got.SoftFailed, got.SignalReason, got.RetriesCount, w.softFailed, w.signalReason, w.retries)
	}
	if (got.RetrySource == nil) != (w.retrySource == nil) || (got.RetrySource != nil && *got.RetrySource != *w.retrySource) {
		t.Errorf("RetrySource = %+v, want %+v", got.RetrySource, w.retrySource)
	}
	if !strings.HasPrefix(got.WebURL, webURL+"#") {
		t.Errorf("job WebURL = %q", got.WebURL)
	}
}

func TestParseEventHeader(t *testing.T) {
	for _, name := range fixtureNames(t) {
		body := readFixture(t, name)
		t.Run(name, func(t *testing.T) {
			// Without a header the body's "event" is used; legacy bodies have
			// none and take the header's, surrounding space ignored.
			p, err := Parse(body, "")
			if legacy, ok := legacyFixtures[name]; ok {
				if !errors.Is(err, ErrNoEvent) {
					t.Errorf("legacy without header: err = %v, want ErrNoEvent", err)
				}
				p, err = Parse(body, "  "+legacy+" \t")
				if err != nil || p.Event != legacy {
					t.Errorf("legacy with header: %v, %v", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Event != fixtureWants[name].event {
				t.Errorf("without header: Event = %q, want %q", p.Event, fixtureWants[name].event)
			}
			// The body's (signed) name wins over a different header.
			if p2, err := Parse(body, "build.failing"); err != nil || p2.Event != p.Event {
				t.Errorf("header build.failing: Event = %q (%v), want the body's %q", p2.Event, err, p.Event)
			}
			// A blank header is no header.
			if p2, err := Parse(body, "   "); err != nil || p2.Event != p.Event {
				t.Errorf("blank header: %v, %v", p2, err)
			}
		})
	}
}

func TestParseProjectFold(t *testing.T) {
	p := parseFixture(t, "legacy_project.json")
	if p.Pipeline == nil {
		t.Fatal("legacy project not folded into Pipeline")
	}
	want := Pipeline{
		ID:            "5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e",
		URL:           "https://api.buildkite.com/v2/organizations/acme/projects/deploy-api",
		WebURL:        "https://buildkite.com/acme/deploy-api",
		Name:          "Deploy API",
		Slug:          "deploy-api",
		DefaultBranch: "main",
	}
	if *p.Pipeline != want {
		t.Errorf("Pipeline = %+v, want %+v", *p.Pipeline, want)
	}

	// When both keys are present the current one wins.
	p, err := Parse([]byte(`{"event":"build.finished","project":{"slug":"old"},"pipeline":{"slug":"new"}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Pipeline.Slug != "new" {
		t.Errorf("pipeline and project: Slug = %q, want new", p.Pipeline.Slug)
	}
	// An explicit null pipeline still falls back to project.
	p, err = Parse([]byte(`{"event":"build.finished","pipeline":null,"project":{"slug":"old"}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Pipeline == nil || p.Pipeline.Slug != "old" {
		t.Errorf("null pipeline: Pipeline = %+v, want project", p.Pipeline)
	}
}

func TestTimeParse(t *testing.T) {
	for _, tc := range []struct {
		in      string // JSON
		want    time.Time
		wantErr bool
	}{
		{in: `"2018-07-01 20:14:38 UTC"`, want: time.Date(2018, 7, 1, 20, 14, 38, 0, time.UTC)},
		{in: `"2024-08-05T12:00:00.000Z"`, want: time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)},
		{in: `"2024-08-05T12:00:00Z"`, want: time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)},
		{in: `"2024-08-05T14:00:00.250+02:00"`, want: time.Date(2024, 8, 5, 12, 0, 0, 250e6, time.UTC)},
		{in: `"2018-07-01 22:14:38 +0200"`, want: time.Date(2018, 7, 1, 20, 14, 38, 0, time.UTC)},
		{in: `"2018-07-01 20:14:38.5 UTC"`, want: time.Date(2018, 7, 1, 20, 14, 38, 5e8, time.UTC)},
		{in: `"2018-07-01 20:14:38"`, want: time.Date(2018, 7, 1, 20, 14, 38, 0, time.UTC)},
		{in: `null`},
		{in: `""`},
		{in: `"yesterday"`, wantErr: true},
		{in: `"2024-13-05T12:00:00Z"`, wantErr: true},
		{in: `1722859200`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `{}`, wantErr: true},
		// Instants that cannot be written back in the 4-digit-year layout.
		{in: `"9999-12-31T23:59:59-23:59"`, wantErr: true},
		{in: `"0000-01-01T00:00:00+01:00"`, wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var got Time
			err := json.Unmarshal([]byte(tc.in), &got)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("got %v, want %v", got.Time, tc.want)
			}
			if !got.IsZero() && got.Location() != time.UTC {
				t.Errorf("location = %v, want UTC", got.Location())
			}
		})
	}
}

func TestTimeMarshal(t *testing.T) {
	cet := time.FixedZone("CEST", 2*3600)
	for _, tc := range []struct {
		in   time.Time
		json string
	}{
		{time.Date(2024, 8, 5, 14, 0, 0, 500_999_999, cet), `"2024-08-05T12:00:00.500Z"`},
		{time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC), `"2024-08-05T12:00:00.000Z"`},
		{time.Date(2018, 7, 1, 20, 14, 38, 0, time.UTC), `"2018-07-01T20:14:38.000Z"`},
	} {
		got, err := json.Marshal(Time{tc.in})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.json {
			t.Errorf("Marshal(%v) = %s, want %s", tc.in, got, tc.json)
		}
		if s := (Time{tc.in}).String(); `"`+s+`"` != tc.json {
			t.Errorf("String() = %q, want %s", s, tc.json)
		}
		var back Time
		if err := json.Unmarshal(got, &back); err != nil || !back.Equal(tc.in.Truncate(time.Millisecond)) {
			t.Errorf("round trip %s: %v, %v", got, back, err)
		}
	}
	if s := (Time{}).String(); s != "" {
		t.Errorf("zero String() = %q, want empty", s)
	}
	// Zero times are left out of a trimmed payload, set ones are written in UTC.
	out, err := json.Marshal(parseFixture(t, "legacy_project.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(`"finished_at":"2018-07-01T20:14:38.000Z"`)) {
		t.Errorf("legacy finished_at not RFC3339 UTC ms: %s", out)
	}
	out, err = json.Marshal(parseFixture(t, "build_scheduled.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"started_at", "failing_at", "finished_at"} {
		if bytes.Contains(out, []byte(`"`+k+`"`)) {
			t.Errorf("null %s written: %s", k, out)
		}
	}
}

func TestAuthor(t *testing.T) {
	for _, tc := range []struct {
		in                  string // JSON value of build.author
		nilAuthor           bool
		name, user, display string
		wantErr             bool
	}{
		{in: `{"username":"jane","name":"Jane Doe","email":"jane@example.com"}`, name: "Jane Doe", user: "jane", display: "Jane Doe"},
		{in: `{"username":"jane","name":"","email":"jane@example.com"}`, user: "jane", display: "jane"},
		{in: `{"name":"jane@example.com"}`, display: ""},
		{in: `"Jane Doe <jane@example.com>"`, name: "Jane Doe", display: "Jane Doe"},
		{in: `"Jane Doe"`, name: "Jane Doe", display: "Jane Doe"},
		{in: `"jane@example.com"`, display: ""},
		{in: `"<jane@example.com>"`, display: ""},
		{in: `""`, display: ""},
		{in: `null`, nilAuthor: true},
		{in: `42`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `["Jane"]`, wantErr: true},
		{in: `{"name":5}`, wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := Parse([]byte(`{"event":"build.finished","build":{"author":`+tc.in+`}}`), "")
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %+v, want error", p.Build.Author)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := p.Build.Author
			if tc.nilAuthor {
				if a != nil {
					t.Errorf("Author = %+v, want nil", a)
				}
				if a.Display() != "" {
					t.Errorf("nil Display() = %q", a.Display())
				}
				return
			}
			if a == nil {
				t.Fatal("Author is nil")
			}
			if a.Name != tc.name || a.Username != tc.user || a.Display() != tc.display {
				t.Errorf("Author = %+v display %q, want name %q user %q display %q", *a, a.Display(), tc.name, tc.user, tc.display)
			}
			out, _ := json.Marshal(p)
			if bytes.Contains(out, []byte("@")) {
				t.Errorf("e-mail address survived: %s", out)
			}
		})
	}
}

func TestSlugs(t *testing.T) {
	for _, tc := range []struct {
		name          string
		p             Payload
		org, pipeline string
	}{
		{"pipeline web url", Payload{Pipeline: &Pipeline{WebURL: "https://buildkite.com/acme/deploy-api"}}, "acme", "deploy-api"},
		{"pipeline api url", Payload{Pipeline: &Pipeline{URL: "https://api.buildkite.com/v2/organizations/acme/pipelines/deploy-api"}}, "acme", "deploy-api"},
		{"build web url", Payload{Build: &Build{WebURL: webURL}}, "acme", "deploy-api"},
		{"build api url", Payload{Build: &Build{URL: apiURL}}, "acme", "deploy-api"},
		{"legacy projects api url", Payload{Build: &Build{URL: "https://api.buildkite.com/v2/organizations/acme/projects/deploy-api/builds/1234"}}, "acme", "deploy-api"},
		{"api url of the organization only", Payload{Build: &Build{URL: "https://api.buildkite.com/v2/organizations/acme"}}, "acme", ""},
		{"slug field wins over urls", Payload{Pipeline: &Pipeline{Slug: "real", WebURL: "https://buildkite.com/acme/other"}}, "acme", "real"},
		{"first url with an org wins", Payload{Pipeline: &Pipeline{WebURL: "nonsense", URL: "https://api.buildkite.com/v2/organizations/org2/pipelines/p2"},
			Build: &Build{WebURL: "https://buildkite.com/org3/p3/builds/1"}}, "org2", "p2"},
		{"nothing", Payload{}, "", ""},
		{"empty objects", Payload{Pipeline: &Pipeline{}, Build: &Build{}}, "", ""},
		{"not urls", Payload{Pipeline: &Pipeline{WebURL: "acme/deploy-api", URL: "://"}, Build: &Build{WebURL: "https://"}}, "", ""},
		{"api url without organizations", Payload{Build: &Build{URL: "https://api.buildkite.com/v2/builds"}}, "", ""},
		{"bare host", Payload{Build: &Build{WebURL: "https://buildkite.com/"}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.OrgSlug(); got != tc.org {
				t.Errorf("OrgSlug() = %q, want %q", got, tc.org)
			}
			if got := tc.p.PipelineSlug(); got != tc.pipeline {
				t.Errorf("PipelineSlug() = %q, want %q", got, tc.pipeline)
			}
		})
	}
}

// leaks lists what in a marshalled payload must not be there.
func leaks(out []byte) []string {
	var found []string
	for _, s := range sentinels {
		if bytes.Contains(out, []byte(s)) {
			found = append(found, "sentinel "+s)
		}
	}
	if bytes.Contains(out, []byte("SECRET-")) {
		found = append(found, `"SECRET-"`)
	}
	if bytes.Contains(out, []byte("@")) {
		found = append(found, `"@"`)
	}
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		return append(found, "not JSON: "+err.Error())
	}
	walkKeys(v, func(k string) {
		if slices.Contains(forbiddenKeys, k) {
			found = append(found, "key "+k)
		}
	})
	return found
}

func walkKeys(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			f(k)
			walkKeys(e, f)
		}
	case []any:
		for _, e := range v {
			walkKeys(e, f)
		}
	}
}

func TestTrimDropsSecrets(t *testing.T) {
	planted := map[string]bool{}
	for _, name := range fixtureNames(t) {
		t.Run(name, func(t *testing.T) {
			raw := readFixture(t, name)
			for _, s := range sentinels {
				if bytes.Contains(raw, []byte(s)) {
					planted[s] = true
				}
			}
			// The check must be able to fail: the untrimmed body of every
			// fixture but ping is caught by it.
			if name != "ping.json" && len(leaks(raw)) == 0 {
				t.Errorf("%s plants no secret, key or address for the trim check to find", name)
			}
			out, err := json.Marshal(parseFixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if l := leaks(out); len(l) > 0 {
				t.Errorf("trimmed payload leaks %v:\n%s", l, out)
			}
		})
	}
	for _, s := range sentinels {
		if !planted[s] {
			t.Errorf("no fixture plants %q", s)
		}
	}
}

func TestPayloadLargeFixtureSize(t *testing.T) {
	// The benchmark figure of DESIGN §8 is for a ~5 KB body.
	n := len(readFixture(t, "build_finished_large.json"))
	if n < 4500 || n > 6000 {
		t.Errorf("build_finished_large.json is %d bytes, want 4.5-6 KB", n)
	}
	p := parseFixture(t, "build_finished_large.json")
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) >= n/2 {
		t.Errorf("trimmed payload is %d bytes of %d: trimming kept too much", len(out), n)
	}
}

func TestParseBadInput(t *testing.T) {
	failed := readFixture(t, "build_finished_failed.json")
	for _, tc := range []struct {
		name   string
		body   string
		header string
		is     error
	}{
		{name: "empty", body: ``, header: "build.finished"},
		{name: "not json", body: `event=build.finished`, header: "build.finished"},
		{name: "truncated", body: string(failed[:len(failed)/2]), header: "build.finished"},
		{name: "trailing garbage", body: `{"event":"build.finished"} x`},
		{name: "array", body: `[{"event":"build.finished"}]`, header: "build.finished"},
		{name: "empty array", body: `[]`, header: "build.finished"},
		{name: "string", body: `"build.finished"`, header: "build.finished"},
		{name: "number", body: `42`, header: "build.finished"},
		{name: "null", body: `null`, header: "build.finished"},
		{name: "null without header", body: `null`},
		{name: "number as object", body: `{"event":"build.finished","build":{"number":{}}}`},
		{name: "number as string", body: `{"event":"build.finished","build":{"number":"1234"}}`},
		{name: "number as float", body: `{"event":"build.finished","build":{"number":12.5}}`},
		{name: "state as number", body: `{"event":"build.finished","build":{"state":3}}`},
		{name: "blocked as string", body: `{"event":"build.finished","build":{"blocked":"true"}}`},
		{name: "build as array", body: `{"event":"build.finished","build":[]}`},
		{name: "pipeline as string", body: `{"event":"build.finished","pipeline":"deploy-api"}`},
		{name: "event as number", body: `{"event":5}`, header: "build.finished"},
		{name: "exit status as string", body: `{"event":"job.finished","job":{"exit_status":"1"}}`},
		{name: "retry source as string", body: `{"event":"job.finished","job":{"retry_source":"x"}}`},
		{name: "timestamp as number", body: `{"event":"build.finished","build":{"finished_at":1722859200}}`},
		{name: "bad timestamp", body: `{"event":"build.finished","build":{"finished_at":"soon"}}`},
		{name: "author as number", body: `{"event":"build.finished","build":{"author":42}}`},
		{name: "no event anywhere", body: `{"build":{"number":1}}`, is: ErrNoEvent},
		{name: "empty event", body: `{"event":""}`, is: ErrNoEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse([]byte(tc.body), tc.header)
			if err == nil {
				t.Fatalf("Parse = %+v, want error", p)
			}
			if p != nil {
				t.Errorf("Parse returned a payload with its error: %+v", p)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want %v", err, tc.is)
			}
		})
	}
}

func TestParseKeepsNonASCIIHeaderValid(t *testing.T) {
	// Whatever the header holds, the event name must survive the JSON of the
	// queue message unchanged, so invalid UTF-8 is replaced up front.
	p, err := Parse([]byte(`{}`), "build.\xfffinished")
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Parse(out, "")
	if err != nil || p2.Event != p.Event {
		t.Errorf("event %q did not round-trip: %+v, %v", p.Event, p2, err)
	}
}

// FuzzParse: Parse never panics, and whatever it accepts marshals and parses
// back to the same event and the same trimmed bytes (what the dispatcher
// will read from the queue).
func FuzzParse(f *testing.F) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
		f.Add(b, "build.finished")
	}
	f.Add([]byte(`{"build":{"author":"A <a@b>","finished_at":"2018-07-01 20:14:38 UTC"}}`), "build.finished")
	f.Add([]byte(`{"event":"job.finished","job":{"exit_status":-1,"finished_at":"2024-08-05T14:00:00+02:00"}}`), "")
	f.Add([]byte(`null`), "ping")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		p, err := Parse(body, header)
		if err != nil {
			if p != nil {
				t.Fatalf("payload with error %v", err)
			}
			return
		}
		if p.Event == "" {
			t.Fatal("accepted a payload without an event")
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("marshal %+v: %v", p, err)
		}
		p2, err := Parse(out, "")
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if p2.Event != p.Event {
			t.Fatalf("event %q became %q", p.Event, p2.Event)
		}
		out2, err := json.Marshal(p2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
		_ = p.OrgSlug()
		_ = p.PipelineSlug()
	})
}

func TestSubject(t *testing.T) {
	long := strings.Repeat("é", 150) // 300 bytes, multi-byte runes
	tests := []struct{ in, want string }{
		{"Fix flaky test\n\nLonger body", "Fix flaky test"},
		{"\n\n  Leading blanks  \nsecond", "Leading blanks"},
		{"", ""},
		{"\n \n", ""},
		{"Merge branch\n\nCo-authored-by: Jane <jane@example.com>", "Merge branch"},
		{"Revert change by jane@example.com today", "Revert change by [email] today"},
		{"Ping @team about it", "Ping @team about it"},
		{long, strings.Repeat("é", 98) + "…"}, // 199 bytes: the bound counts the ellipsis
		{"Fix for <jane@example.com>.", "Fix for <[email]>."},
		{"Bump npm@10.2.0 and @v2", "Bump npm@10.2.0 and @v2"},
		{strings.Repeat("x", 195) + " jane@example.com", strings.Repeat("x", 195) + " […"}, // redacted before the cut: no partial address
	}
	for _, tc := range tests {
		if got := Subject(tc.in); got != tc.want {
			t.Errorf("Subject(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !utf8.ValidString(Subject(tc.in)) {
			t.Errorf("Subject(%q) is not valid UTF-8", tc.in)
		}
	}
}
