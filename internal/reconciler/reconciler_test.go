package reconciler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

var t0 = time.Date(2026, 8, 5, 12, 0, 0, 0, time.UTC)

type fakeOpen struct {
	list []Incident
	err  error
}

func (f *fakeOpen) OpenIncidents(context.Context) ([]Incident, error) {
	return append([]Incident(nil), f.list...), f.err
}

// fakeBuilds answers FinishedBuilds by "org/pipeline/branch" and Build by
// "org/pipeline#n"; a missing key is a 404. Each call advances the clock by
// cost, so deadlines can be tested without sleeping.
type fakeBuilds struct {
	lists  map[string][]buildkiteapi.Build
	builds map[string]*buildkiteapi.Build
	errs   map[string]error // by the same keys, first
	orgs   map[string]error // CheckOrg by org; missing = readable
	clock  *testkit.Clock
	cost   time.Duration
	calls  []string
}

func (f *fakeBuilds) step(key string) error {
	f.calls = append(f.calls, key)
	if f.clock != nil {
		f.clock.Advance(f.cost)
	}
	return f.errs[key]
}

func (f *fakeBuilds) FinishedBuilds(_ context.Context, org, pipeline, branch string, n int) ([]buildkiteapi.Build, error) {
	key := org + "/" + pipeline + "/" + branch
	if err := f.step(key); err != nil {
		return nil, err
	}
	l, ok := f.lists[key]
	if !ok {
		return nil, fmt.Errorf("list: %w", buildkiteapi.ErrNotFound)
	}
	return l[:min(n, len(l))], nil
}

func (f *fakeBuilds) Build(_ context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error) {
	key := fmt.Sprintf("%s/%s#%d", org, pipeline, number)
	if err := f.step(key); err != nil {
		return nil, err
	}
	b, ok := f.builds[key]
	if !ok {
		return nil, fmt.Errorf("get: %w", buildkiteapi.ErrNotFound)
	}
	return b, nil
}

func (f *fakeBuilds) CheckOrg(_ context.Context, org string) error {
	f.step("org:" + org)
	return f.orgs[org]
}

// apiBuild is a build as the client returns it for acme/api.
func apiBuild(number int64, state, branch string, finished time.Time) buildkiteapi.Build {
	return buildkiteapi.Build{
		Build: buildkite.Build{
			ID: fmt.Sprintf("uuid-%d", number), Number: number, State: state, Branch: branch,
			URL:        fmt.Sprintf("https://api.buildkite.com/v2/organizations/acme/pipelines/api/builds/%d", number),
			WebURL:     fmt.Sprintf("https://buildkite.com/acme/api/builds/%d", number),
			FinishedAt: buildkite.Time{Time: finished}, Message: "Fix it",
		},
		Pipeline: &buildkite.Pipeline{Slug: "api", WebURL: "https://buildkite.com/acme/api", DefaultBranch: "main"},
	}
}

func open(branch string, failed int64, at time.Time) Incident {
	return Incident{ID: "acme/api/" + branch, Org: "acme", Pipeline: "api", Branch: branch, FailedBuild: failed, FailedAt: at}
}

type stack struct {
	builds *fakeBuilds
	pub    *testkit.Publisher[queue.Message]
	clock  *testkit.Clock
	logs   *bytes.Buffer
	sleeps []time.Duration
}

func newReconciler(st *stack, open *fakeOpen, o Options) *Reconciler {
	if st.clock == nil {
		st.clock = testkit.NewClock(t0)
	}
	st.builds.clock = st.clock
	st.logs = &bytes.Buffer{}
	o.Log = slog.New(slog.NewJSONHandler(st.logs, nil))
	o.Now = st.clock.Now
	o.Shuffle = func(int, func(i, j int)) {} // keep the listed order
	o.Sleep = func(_ context.Context, d time.Duration) error {
		st.sleeps = append(st.sleeps, d)
		st.clock.Advance(d)
		return nil
	}
	return New(open, st.builds, st.builds, st.pub, o)
}

// summaryLine returns the one log line of a run, failing on more.
func summaryLine(t *testing.T, logs *bytes.Buffer) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want exactly one:\n%s", len(lines), logs)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// mapsToResolve checks a queued message as the dispatcher will read it:
// a v1 envelope marked as the reconciler's, whose payload the default rules
// map to a PASSED for the incident.
func mapsToResolve(t *testing.T, m queue.Message, inc Incident, reason string) *queue.Envelope {
	t.Helper()
	e, err := queue.Decode(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	if e.Origin != queue.OriginReconciler || e.Reason != reason || e.RequestID != "reconciler-run-1" || e.Event != "build.finished" {
		t.Errorf("envelope %+v", e)
	}
	if m.GroupID != inc.ID || len(m.DedupID) != 64 {
		t.Errorf("group %q dedup %q", m.GroupID, m.DedupID)
	}
	d := incident.DefaultRules().Classify(e.Payload)
	if !d.Act || d.ID != inc.ID || d.Status != incident.StatusPassed {
		t.Errorf("the dispatcher would map it to %+v, want a PASSED for %s", d, inc.ID)
	}
	return e
}

func TestReconcileOne(t *testing.T) {
	failedAt := t0.Add(-time.Hour)
	rebuild := apiBuild(20, "passed", "main", t0.Add(-time.Minute))
	rebuild.RebuiltFrom = &buildkite.BuildRef{Number: 9}
	// #21 rebuilt #20, itself a rebuild of #9: the state remembers the
	// chain, so #21 orders as #9, before the failure of #10.
	chained := apiBuild(21, "passed", "main", t0)
	chained.RebuiltFrom = &buildkite.BuildRef{Number: 20}
	chainInc := open("main", 10, failedAt)
	chainInc.Rebuilds = map[string]int64{"20": 9}
	otherSlug := apiBuild(11, "passed", "main", t0)
	otherSlug.Pipeline.Slug = "api-v2"
	// A fork's pull request named main, newest on the branch.
	forkPR := func(state string) buildkiteapi.Build {
		b := apiBuild(12, state, "main", t0)
		b.PullRequest = &buildkite.PullRequest{ID: "42", Base: "main"}
		return b
	}
	tests := []struct {
		name    string
		inc     Incident
		lists   map[string][]buildkiteapi.Build
		builds  map[string]*buildkiteapi.Build
		errs    map[string]error
		orgs    map[string]error
		pubErr  error
		want    Summary
		calls   string
		reason  string // of the one message, "" = none queued
		payload func(t *testing.T, e *queue.Envelope)
	}{
		{name: "a newer build passed: resolve from the API's build",
			inc:   open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(11, "passed", "main", t0.Add(-time.Minute)), apiBuild(10, "failed", "main", failedAt)}},
			want:  Summary{Checked: 1, Resolved: 1, Calls: 1}, calls: "acme/api/main", reason: ReasonPassed,
			payload: func(t *testing.T, e *queue.Envelope) {
				if b := e.Payload.Build; b.Number != 11 || b.ID != "uuid-11" || b.WebURL != "https://buildkite.com/acme/api/builds/11" || e.Payload.Job != nil {
					t.Errorf("payload build %+v", b)
				}
				if q, _ := queue.NewMessage(e.Payload, "acme/api/main", "", t0); q.DedupID != queue.DedupID(e.Payload) {
					t.Error("dedup id is not the webhook's: a late real webhook would not be dropped")
				}
			}},
		{name: "the newest finished build failed", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(12, "failed", "main", t0)}},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "a pass older than the failure", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(9, "passed", "main", t0)}},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "a rebuild orders as the build it rebuilt", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {rebuild}},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "a rebuild of a rebuild orders as the original build", inc: chainInc,
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {chained}},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "a fork PR's failure does not hide the branch's pass", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {forkPR("failed"), apiBuild(11, "passed", "main", t0.Add(-time.Minute))}},
			want:  Summary{Checked: 1, Resolved: 1, Calls: 1}, calls: "acme/api/main", reason: ReasonPassed},
		{name: "a fork PR's pass resolves nothing", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {forkPR("passed"), apiBuild(11, "failed", "main", t0.Add(-time.Minute))}},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "the failed build itself passed on a retry (same number, later)", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(10, "passed", "main", failedAt.Add(time.Minute))}},
			want:  Summary{Checked: 1, Resolved: 1, Calls: 1}, calls: "acme/api/main", reason: ReasonPassed},
		{name: "same number, not later: the failure itself", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(10, "passed", "main", failedAt)}},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "pipeline 404, organization readable: resolve with the reason", inc: open("main", 10, failedAt),
			want: Summary{Checked: 1, NotFound: 1, Calls: 2}, calls: "acme/api/main org:acme", reason: ReasonPipelineGone,
			payload: func(t *testing.T, e *queue.Envelope) {
				if b := e.Payload.Build; b.Number != 10 || !b.FinishedAt.After(failedAt) || b.ID != "" {
					t.Errorf("a not-found resolve must order after the failure: %+v", b)
				}
			}},
		{name: "pipeline 404 from a token that cannot read the organization: not believed", inc: open("main", 10, failedAt),
			orgs: map[string]error{"acme": buildkiteapi.ErrNotFound},
			want: Summary{Checked: 1, Errors: 1, Calls: 2}, calls: "acme/api/main org:acme"},
		{name: "no finished build, and the failed build is gone (the list's 200 proves the org readable)", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": nil},
			want:  Summary{Checked: 1, NotFound: 1, Calls: 2}, calls: "acme/api/main acme/api#10", reason: ReasonBuildGone},
		{name: "no finished build yet: the failure is still running", inc: open("main", 10, failedAt),
			lists:  map[string][]buildkiteapi.Build{"acme/api/main": nil},
			builds: map[string]*buildkiteapi.Build{"acme/api#10": {Build: buildkite.Build{Number: 10, State: "failing"}}},
			want:   Summary{Checked: 1, StillFailing: 1, Calls: 2}, calls: "acme/api/main acme/api#10"},
		{name: "no finished build, failure number unknown", inc: open("main", 0, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": nil},
			want:  Summary{Checked: 1, StillFailing: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "5xx", inc: open("main", 10, failedAt),
			errs: map[string]error{"acme/api/main": buildkiteapi.ErrUnavailable},
			want: Summary{Checked: 1, Errors: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "401", inc: open("main", 10, failedAt),
			errs: map[string]error{"acme/api/main": buildkiteapi.ErrUnauthorized},
			want: Summary{Checked: 1, Errors: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "the queue refuses the resolve", inc: open("main", 10, failedAt), pubErr: errors.New("sqs down"),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(11, "passed", "main", t0)}},
			want:  Summary{Checked: 1, Errors: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "the API's build would map to another incident", inc: open("main", 10, failedAt),
			lists: map[string][]buildkiteapi.Build{"acme/api/main": {otherSlug}},
			want:  Summary{Checked: 1, Errors: 1, Calls: 1}, calls: "acme/api/main"},
		{name: "a job incident is skipped", inc: Incident{ID: "acme/api/main#rspec", Org: "acme", Pipeline: "api", Branch: "main", FailedBuild: 10},
			want: Summary{Skipped: 1}},
		{name: "an entry whose id does not match its fields is skipped", inc: Incident{ID: "acme/api/main", Org: "acme", Pipeline: "web", Branch: "main"},
			want: Summary{Skipped: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &stack{builds: &fakeBuilds{lists: tc.lists, builds: tc.builds, errs: tc.errs, orgs: tc.orgs}, pub: &testkit.Publisher[queue.Message]{Err: tc.pubErr}}
			r := newReconciler(st, &fakeOpen{list: []Incident{tc.inc}}, Options{})
			got, err := r.Run(context.Background(), "run-1", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if (got.FirstError != "") != (got.Errors > 0) {
				t.Errorf("first error %q with %d errors", got.FirstError, got.Errors)
			}
			got.FirstError, got.Duration = "", 0
			if got != tc.want {
				t.Errorf("summary %+v\n want %+v", got, tc.want)
			}
			if c := strings.Join(st.builds.calls, " "); c != tc.calls {
				t.Errorf("calls %q, want %q", c, tc.calls)
			}
			if (st.pub.Len() == 1) != (tc.reason != "") || st.pub.Len() > 1 {
				t.Fatalf("%d messages queued, want reason %q", st.pub.Len(), tc.reason)
			}
			if tc.reason != "" {
				e := mapsToResolve(t, st.pub.Messages()[0], tc.inc, tc.reason)
				if tc.payload != nil {
					tc.payload(t, e)
				}
			}
			line := summaryLine(t, st.logs)
			for _, k := range []string{"checked", "resolved", "still_failing", "not_found", "errors", "rate_limited", "duration_ms"} {
				if _, ok := line[k]; !ok {
					t.Errorf("summary line has no %q: %v", k, line)
				}
			}
		})
	}
}

func TestOrgCheckedOncePerRun(t *testing.T) {
	tests := []struct {
		name  string
		incs  []Incident
		lists map[string][]buildkiteapi.Build
		calls string
	}{
		{"two 404s: one probe", []Incident{open("a", 1, t0), open("b", 1, t0)}, nil,
			"acme/api/a org:acme acme/api/b"},
		{"a success in the org is proof enough", []Incident{open("a", 1, t0), open("b", 1, t0)},
			map[string][]buildkiteapi.Build{"acme/api/a": {apiBuild(1, "failed", "a", t0)}},
			"acme/api/a acme/api/b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &stack{builds: &fakeBuilds{lists: tc.lists}, pub: &testkit.Publisher[queue.Message]{}}
			r := newReconciler(st, &fakeOpen{list: tc.incs}, Options{})
			if _, err := r.Run(context.Background(), "run-1", time.Time{}); err != nil {
				t.Fatal(err)
			}
			if c := strings.Join(st.builds.calls, " "); c != tc.calls {
				t.Errorf("calls %q, want %q", c, tc.calls)
			}
		})
	}
}

// failing returns n incidents on branches b0…, each with a failed newest build.
func failing(n int) (*fakeOpen, map[string][]buildkiteapi.Build) {
	o := &fakeOpen{}
	lists := map[string][]buildkiteapi.Build{}
	for i := range n {
		br := fmt.Sprintf("b%d", i)
		o.list = append(o.list, open(br, 10, t0))
		lists["acme/api/"+br] = []buildkiteapi.Build{apiBuild(11, "failed", br, t0)}
	}
	return o, lists
}

func TestBudgetAndDeadline(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		opts     Options
		cost     time.Duration
		deadline time.Duration // 0 = none given
		want     Summary
	}{
		{"the budget bounds the calls", 10, Options{Budget: 4}, 0, 0, Summary{Checked: 4, StillFailing: 4, Unchecked: 6, Calls: 4}},
		{"the default budget", 40, Options{}, 0, 0, Summary{Checked: DefaultBudget, StillFailing: DefaultBudget, Unchecked: 40 - DefaultBudget, Calls: DefaultBudget}},
		// 10 s a call, 60 s to go, no call started with 2 s or less left: 6 calls.
		{"the deadline ends the run", 10, Options{}, 10 * time.Second, time.Minute, Summary{Checked: 6, StillFailing: 6, Unchecked: 4, Calls: 6}},
		{"Options.Timeout without a deadline", 10, Options{Timeout: 30 * time.Second}, 10 * time.Second, 0, Summary{Checked: 3, StillFailing: 3, Unchecked: 7, Calls: 3}},
		{"everything fits", 3, Options{}, time.Second, time.Minute, Summary{Checked: 3, StillFailing: 3, Calls: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, lists := failing(tc.n)
			st := &stack{builds: &fakeBuilds{lists: lists, cost: tc.cost}, pub: &testkit.Publisher[queue.Message]{}}
			r := newReconciler(st, o, tc.opts)
			var dl time.Time
			if tc.deadline > 0 {
				dl = t0.Add(tc.deadline)
			}
			got, err := r.Run(context.Background(), "run-1", dl)
			if err != nil {
				t.Fatal(err)
			}
			got.Duration = 0
			if got != tc.want {
				t.Errorf("summary %+v\n want %+v", got, tc.want)
			}
			line := summaryLine(t, st.logs)
			if line["unchecked"] != float64(tc.want.Unchecked) || line["duration_ms"] != float64((time.Duration(tc.want.Calls)*tc.cost).Milliseconds()) {
				t.Errorf("summary line %v", line)
			}
		})
	}
}

func TestRateLimited(t *testing.T) {
	tests := []struct {
		name   string
		errs   []error // answers to b1's list call, in turn
		want   Summary
		sleeps []time.Duration
	}{
		{"a far reset stops the run, the rest left for the next",
			[]error{&buildkiteapi.RateLimitError{Reset: t0.Add(40 * time.Second), Scope: "rest_user"}},
			Summary{Checked: 1, StillFailing: 1, RateLimited: 1, Unchecked: 2, Calls: 2}, nil},
		{"a near reset is waited out, once",
			[]error{&buildkiteapi.RateLimitError{Reset: t0.Add(3 * time.Second)}, nil},
			Summary{Checked: 3, StillFailing: 3, RateLimited: 1, Calls: 4}, []time.Duration{3 * time.Second}},
		{"a second 429 after the wait stops",
			[]error{&buildkiteapi.RateLimitError{Reset: t0.Add(time.Second)}, &buildkiteapi.RateLimitError{Reset: t0.Add(2 * time.Second)}},
			Summary{Checked: 1, StillFailing: 1, RateLimited: 2, Unchecked: 2, Calls: 3}, []time.Duration{time.Second}},
		{"a refusal without a request spends no call",
			[]error{&buildkiteapi.RateLimitError{Reset: t0.Add(time.Hour), Local: true}},
			Summary{Checked: 1, StillFailing: 1, RateLimited: 1, Unchecked: 2, Calls: 1}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, lists := failing(3)
			fb := &rateLimitedBuilds{fakeBuilds: fakeBuilds{lists: lists}, key: "acme/api/b1", answers: tc.errs}
			st := &stack{builds: &fb.fakeBuilds, pub: &testkit.Publisher[queue.Message]{}}
			r := newReconciler(st, o, Options{})
			r.builds = fb
			got, err := r.Run(context.Background(), "run-1", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if (got.FirstError != "") != (got.Unchecked > 0) {
				t.Errorf("first error %q", got.FirstError)
			}
			got.FirstError, got.Duration = "", 0
			if got != tc.want {
				t.Errorf("summary %+v\n want %+v", got, tc.want)
			}
			if fmt.Sprint(st.sleeps) != fmt.Sprint(tc.sleeps) {
				t.Errorf("sleeps %v, want %v", st.sleeps, tc.sleeps)
			}
			if line := summaryLine(t, st.logs); line["level"] != "WARN" || line["rate_limited"] != float64(tc.want.RateLimited) {
				t.Errorf("summary line %v", line)
			}
		})
	}
}

// rateLimitedBuilds answers one key's list calls from answers, in turn.
type rateLimitedBuilds struct {
	fakeBuilds
	key     string
	answers []error
}

func (f *rateLimitedBuilds) FinishedBuilds(ctx context.Context, org, pipeline, branch string, n int) ([]buildkiteapi.Build, error) {
	if org+"/"+pipeline+"/"+branch == f.key && len(f.answers) > 0 {
		err := f.answers[0]
		f.answers = f.answers[1:]
		if err != nil {
			f.calls = append(f.calls, f.key)
			return nil, fmt.Errorf("list: %w", err)
		}
	}
	return f.fakeBuilds.FinishedBuilds(ctx, org, pipeline, branch, n)
}

func TestOpenIncidentsFail(t *testing.T) {
	st := &stack{builds: &fakeBuilds{}, pub: &testkit.Publisher[queue.Message]{}}
	r := newReconciler(st, &fakeOpen{err: errors.New("dynamodb: throttled")}, Options{})
	got, err := r.Run(context.Background(), "run-1", time.Time{})
	if err == nil || got.Errors != 1 || got.Checked != 0 || len(st.builds.calls) != 0 {
		t.Fatalf("summary %+v err %v", got, err)
	}
	if line := summaryLine(t, st.logs); !strings.Contains(fmt.Sprint(line["first_error"]), "throttled") || line["level"] != "WARN" {
		t.Errorf("summary line %v", line)
	}
}

func TestShuffledByDefault(t *testing.T) {
	o, lists := failing(30)
	seen := map[string]bool{}
	for range 5 {
		fb := &fakeBuilds{lists: lists}
		r := New(o, fb, fb, &testkit.Publisher[queue.Message]{}, Options{Budget: 1})
		if _, err := r.Run(context.Background(), "r", time.Time{}); err != nil {
			t.Fatal(err)
		}
		seen[fb.calls[0]] = true
	}
	// 5 runs of 1 call over 30 incidents: all on one incident has odds of 30^-4.
	if len(seen) < 2 {
		t.Errorf("every run checked %v first: with more incidents than budget, some would never be reached", seen)
	}
}

// A 404 resolve has no build, so no pipeline to say its default branch: it
// must still map under ALERT_BRANCHES=default for an incident on a
// pipeline whose default branch is not main.
func TestGoneResolveMapsOnAnyDefaultBranch(t *testing.T) {
	inc := open("develop", 10, t0.Add(-time.Hour))
	st := &stack{pub: &testkit.Publisher[queue.Message]{}, builds: &fakeBuilds{lists: map[string][]buildkiteapi.Build{}}}
	s, err := newReconciler(st, &fakeOpen{list: []Incident{inc}}, Options{}).Run(context.Background(), "run-1", time.Time{})
	if err != nil || s.NotFound != 1 || st.pub.Len() != 1 {
		t.Fatalf("summary %+v, %d queued, err %v: want one 404 resolve", s, st.pub.Len(), err)
	}
	mapsToResolve(t, st.pub.Messages()[0], inc, ReasonPipelineGone)
}

// A pipeline renamed while red: the state item keeps the old slug's id
// and learns the new slug from the event that came under it. The
// reconciler asks about the new slug and queues the resolve in the new
// id's group, in order with its webhooks; the dispatcher's alias (DESIGN
// §5b) takes it to the incident the old slug opened.
func TestRenamedPipeline(t *testing.T) {
	failedAt := t0.Add(-time.Hour)
	inc := Incident{ID: "acme/api-old/main", Org: "acme", Pipeline: "api", Slug: "api-old", Branch: "main", FailedBuild: 10, FailedAt: failedAt}
	st := &stack{builds: &fakeBuilds{lists: map[string][]buildkiteapi.Build{"acme/api/main": {apiBuild(11, "passed", "main", t0)}}},
		pub: &testkit.Publisher[queue.Message]{}}
	got, err := newReconciler(st, &fakeOpen{list: []Incident{inc}}, Options{}).Run(context.Background(), "run-1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Resolved != 1 || got.Errors != 0 || st.pub.Len() != 1 {
		t.Fatalf("summary %+v, %d queued; want one resolve", got, st.pub.Len())
	}
	m := st.pub.Messages()[0]
	e, err := queue.Decode(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	d := incident.DefaultRules().Classify(e.Payload)
	if m.GroupID != "acme/api/main" || d.ID != "acme/api/main" || d.Status != incident.StatusPassed {
		t.Errorf("group %q, maps to %+v; want a PASSED in the new slug's group", m.GroupID, d)
	}
	// A build of some third slug is still refused.
	st2 := &stack{builds: &fakeBuilds{lists: map[string][]buildkiteapi.Build{"acme/api/main": {func() buildkiteapi.Build {
		b := apiBuild(11, "passed", "main", t0)
		b.Pipeline.Slug = "web"
		return b
	}()}}}, pub: &testkit.Publisher[queue.Message]{}}
	if got, _ := newReconciler(st2, &fakeOpen{list: []Incident{inc}}, Options{}).Run(context.Background(), "run-1", time.Time{}); got.Errors != 1 || st2.pub.Len() != 0 {
		t.Errorf("another slug's build: summary %+v, %d queued; want an error, nothing queued", got, st2.pub.Len())
	}
}
