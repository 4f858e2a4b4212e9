package dispatcher

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/local/buildkitesim"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

const apiToken = "bkua_dispatcher-TEST-api-token"

// apiRig is the rig with the real Buildkite API client against the
// simulator, as the dispatcher runs with BUILDKITE_API_TOKEN set.
func apiRig(t *testing.T) (*rig, *buildkitesim.Server) {
	t.Helper()
	sim := buildkitesim.New(apiToken)
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); srv.Close() })
	c, err := buildkiteapi.New(buildkiteapi.Config{BaseURL: srv.URL + "/v2"}, testkit.Token(apiToken), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, nil, 0)
	rules := incident.DefaultRules()
	rules.TriggeredByParent = true
	r.h = New(Config{Rules: rules, API: c}, r.h.send, r.vis, r.dlq, r.h.log, r.h.metrics)
	r.h.jitter = func() float64 { return 0.5 }
	return r, sim
}

// jobOf is a job.finished fixture as job id of build 1234.
func jobOf(t *testing.T, fixture, id string, mutate func(*buildkite.Job)) *buildkite.Payload {
	t.Helper()
	p := testkit.Webhook(t, fixture)
	p.Job.ID = id
	if mutate != nil {
		mutate(p.Job)
	}
	return p
}

func intp(n int) *int { return &n }

// TestFailedJobsInTheIncident: a failed build's incident names its failed
// jobs when the API answers, and is sent all the same, at once, when it
// does not; every skip is counted and its class logged.
func TestFailedJobsInTheIncident(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		fault   *buildkitesim.Fault
		calls   int    // API requests expected
		jobs    int    // failed_jobs expected
		suffix  string // description ends so
		class   string // enrichment_skipped with this error_class; "" = not skipped
	}{
		{"failed build: its failed jobs named", "build_finished_failed.json", nil, 1, 2, " — failed: test, rspec (2/4)", ""},
		{"build.failing: the jobs failed so far", "build_failing.json", nil, 1, 2, " — failed: test, rspec (2/4)", ""},
		{"passed build: no call", "build_finished_passed.json", nil, 0, 0, "on main: Fix flaky test", ""},
		{"API down (500)", "build_finished_failed.json", &buildkitesim.Fault{Status: 500}, 1, 0, "on main: Fix flaky test", "unavailable"},
		{"API slow: cut at 1 s", "build_finished_failed.json", &buildkitesim.Fault{Delay: 3 * time.Second}, 1, 0, "on main: Fix flaky test", "timeout"},
		{"rate limited (429)", "build_finished_failed.json", &buildkitesim.Fault{Reset: 30 * time.Second}, 1, 0, "on main: Fix flaky test", "rate_limited"},
		{"token refused (401)", "build_finished_failed.json", &buildkitesim.Fault{Status: 401}, 1, 0, "on main: Fix flaky test", "unauthorized"},
		{"malformed answer", "build_finished_failed.json", &buildkitesim.Fault{Malformed: true}, 1, 0, "on main: Fix flaky test", "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, sim := apiRig(t)
			sim.Record(testkit.Webhook(t, "build_finished_failed.json"))
			sim.Record(jobOf(t, "job_finished_failed.json", "job-test", nil))
			sim.Record(jobOf(t, "job_finished_failed_parallel.json", "job-rspec-2", nil))
			sim.Record(jobOf(t, "job_finished_passed.json", "job-lint", func(j *buildkite.Job) { j.Name, j.StepKey = "lint", "lint" }))
			sim.Record(jobOf(t, "job_finished_soft_failed.json", "job-e2e", func(j *buildkite.Job) { j.Name, j.StepKey = "e2e", "e2e" }))
			if tc.fault != nil {
				sim.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault { return tc.fault })
			}
			start := time.Now()
			resp, err := r.h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", tc.fixture, nil)}})
			if err != nil || len(resp.BatchItemFailures) != 0 {
				t.Fatalf("err %v, failures %v: a page must never wait for the API", err, resp.BatchItemFailures)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("delivery took %s: enrichment must give up within 1 s", d)
			}
			sent := r.srv.events()
			if len(sent) != 1 {
				t.Fatalf("SQIBS got %d events, want 1", len(sent))
			}
			ev := sent[0]
			if got := sim.Calls(); got != tc.calls {
				t.Errorf("API calls %d, want %d", got, tc.calls)
			}
			if len(ev.FailedJobs) != tc.jobs {
				t.Fatalf("failed_jobs %+v, want %d", ev.FailedJobs, tc.jobs)
			}
			if !strings.HasSuffix(ev.Description, tc.suffix) {
				t.Errorf("description %q, want it to end in %q", ev.Description, tc.suffix)
			}
			if tc.jobs > 0 {
				want := incident.FailedJob{Name: "test", State: "failed", ExitStatus: intp(1),
					WebURL: "https://buildkite.com/acme/deploy-api/builds/1234#job-test"}
				got := ev.FailedJobs[0]
				if got.Name != want.Name || got.State != want.State || got.ExitStatus == nil || *got.ExitStatus != 1 || !strings.HasPrefix(got.WebURL, "https://buildkite.com/acme/deploy-api/builds/1234#") {
					t.Errorf("failed_jobs[0] = %+v, want like %+v", got, want)
				}
			}
			skipped := strings.Contains(r.emf.String(), `"enrichment_skipped"`)
			if skipped != (tc.class != "") {
				t.Errorf("enrichment_skipped counted %v, want %v:\n%s", skipped, tc.class != "", r.emf.String())
			}
			if tc.class != "" && !strings.Contains(r.logs.String(), `"error_class":"`+tc.class+`"`) {
				t.Errorf("log does not name the class %q:\n%s", tc.class, r.logs.String())
			}
			body := r.logs.String() + r.emf.String()
			for _, s := range []string{apiToken, sqibsToken, "@example.com"} {
				if strings.Contains(body, s) {
					t.Errorf("logs hold %q", s)
				}
			}
		})
	}
}

// A 429 blocks the client until its reset: the next failed build is sent
// unenriched without a request, so the dispatcher backs off with the
// reconciler sharing the client.
func TestEnrichmentBacksOffAfter429(t *testing.T) {
	r, sim := apiRig(t)
	sim.Record(testkit.Webhook(t, "build_finished_failed.json"))
	sim.SetFault(func(n int, _ buildkitesim.Request) *buildkitesim.Fault {
		if n == 1 {
			return &buildkitesim.Fault{Reset: 30 * time.Second}
		}
		return nil
	})
	for i, id := range []string{"m1", "m2"} {
		rec := record(t, id, "build_finished_failed.json", func(p *buildkite.Payload) {
			p.Build.FinishedAt.Time = p.Build.FinishedAt.Add(time.Duration(i) * time.Minute)
		})
		if resp, _ := r.h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{rec}}); len(resp.BatchItemFailures) != 0 {
			t.Fatal(resp.BatchItemFailures)
		}
	}
	if n := len(r.srv.events()); n != 2 {
		t.Fatalf("SQIBS got %d, want both failures", n)
	}
	if n := sim.Calls(); n != 1 {
		t.Errorf("API calls %d, want 1: no request before the reset", n)
	}
	if n := strings.Count(r.emf.String(), `"enrichment_skipped":1`); n != 2 {
		t.Errorf("enrichment_skipped counted %d times, want 2", n)
	}
}

// parentBuild records web-app #5678 in sim: the build whose trigger step
// started build_finished_passed_triggered.json's build.
func parentBuild(t *testing.T, sim *buildkitesim.Server, branch string, pr bool) {
	t.Helper()
	p := testkit.Webhook(t, "build_finished_passed.json")
	p.Build.Number, p.Build.ID, p.Build.Branch = 5678, "0191225a-0000-7000-8000-000000000001", branch
	p.Build.WebURL = "https://buildkite.com/acme/web-app/builds/5678"
	p.Build.URL = "https://api.buildkite.com/v2/organizations/acme/pipelines/web-app/builds/5678"
	p.Pipeline.Slug, p.Pipeline.ID = "web-app", "pipeline-web-app"
	p.Pipeline.WebURL, p.Pipeline.URL = "https://buildkite.com/acme/web-app", "https://api.buildkite.com/v2/organizations/acme/pipelines/web-app"
	if pr {
		p.Build.PullRequest = &buildkite.PullRequest{ID: "42", Base: "main"}
	}
	sim.Record(p)
}

// TestTriggeredBuildJudgedByItsParent: with the API, a triggered build
// alerts as its parent's branch and pull request say; the incident keeps
// the child's own branch. Without the API, or when the parent cannot be
// looked up, the child's own branch decides, as before.
func TestTriggeredBuildJudgedByItsParent(t *testing.T) {
	tests := []struct {
		name         string
		api          bool
		parentBranch string
		parentPR     bool
		down         bool   // the API answers 500
		childBranch  string // the triggered build's own branch
		wantID       string // "" = nothing sent
		wantReason   string
	}{
		{"parent is a PR build: a child on main pages nothing", true, "main", true, false, "main", "", "triggered from a pull-request build"},
		{"parent on main: a child on its pipeline's release branch pages", true, "main", false, false, "release", "acme/deploy-api/release", ""},
		{"parent on a feature branch: a child on main pages nothing", true, "feature/login", false, false, "main", "", "triggered from a build whose branch"},
		{"API down: the child's own branch decides (main pages)", true, "feature/login", true, true, "main", "acme/deploy-api/main", ""},
		{"API down: the child's own branch decides (release does not)", true, "main", false, true, "release", "", "branch not in ALERT_BRANCHES"},
		{"no API: the child's own branch decides, as before", false, "feature/login", true, false, "main", "acme/deploy-api/main", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r *rig
			var sim *buildkitesim.Server
			if tc.api {
				r, sim = apiRig(t)
				parentBuild(t, sim, tc.parentBranch, tc.parentPR)
				if tc.down {
					sim.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault { return &buildkitesim.Fault{Status: 500} })
				}
			} else {
				r = newRig(t, nil, 0)
			}
			child := func(p *buildkite.Payload) { p.Build.Branch, p.Build.State = tc.childBranch, "failed" }
			rec := record(t, "m1", "build_finished_passed_triggered.json", child)
			if resp, _ := r.h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{rec}}); len(resp.BatchItemFailures) != 0 {
				t.Fatal(resp.BatchItemFailures)
			}
			sent := r.srv.events()
			if tc.wantID == "" {
				if len(sent) != 0 {
					t.Fatalf("sent %+v, want nothing", sent)
				}
				if !strings.Contains(r.logs.String(), tc.wantReason) {
					t.Errorf("log does not say %q:\n%s", tc.wantReason, r.logs.String())
				}
				return
			}
			if len(sent) != 1 || sent[0].ID != tc.wantID || sent[0].Branch != tc.childBranch {
				t.Fatalf("sent %+v, want one event of %s", sent, tc.wantID)
			}
			if unknown := strings.Contains(r.emf.String(), `"parent_lookup_failed"`); unknown != tc.down {
				t.Errorf("parent_lookup_failed counted %v, want %v", unknown, tc.down)
			}
		})
	}
}

// The parent of a triggered build is asked once, however many events the
// child sends.
func TestParentLookedUpOnce(t *testing.T) {
	r, sim := apiRig(t)
	parentBuild(t, sim, "main", false)
	var recs []events.SQSMessage
	for i, state := range []string{"failed", "passed"} {
		recs = append(recs, record(t, []string{"m1", "m2"}[i], "build_finished_passed_triggered.json", func(p *buildkite.Payload) {
			p.Build.State, p.Build.Number = state, int64(1234+i)
		}))
	}
	if resp, _ := r.h.Handle(t.Context(), events.SQSEvent{Records: recs}); len(resp.BatchItemFailures) != 0 {
		t.Fatal(resp.BatchItemFailures)
	}
	if n := len(r.srv.events()); n != 2 {
		t.Fatalf("sent %d, want 2", n)
	}
	// One parent lookup, one failed-jobs lookup (#1234 is unknown: 404,
	// sent without them).
	if n := sim.Calls(); n != 2 {
		t.Errorf("API calls %d, want 2", n)
	}
}

// TestReconcilerResolves: a resolve the reconciler queued says so, with its
// reason, and is never enriched; its state-store order applies as to any
// webhook (a stale one is not sent).
func TestReconcilerResolves(t *testing.T) {
	noted := func(id string, reason string, mutate func(*buildkite.Payload)) events.SQSMessage {
		p := testkit.Webhook(t, "build_finished_passed.json")
		p.Build.Number, p.Build.ID = 1235, "build-1235"
		if mutate != nil {
			mutate(p)
		}
		m, err := queue.NewNotedMessage(p, "acme/deploy-api/main", "reconciler-run-1", t0, queue.Note{Origin: queue.OriginReconciler, Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		return raw(id, m.GroupID, string(m.Body))
	}
	r, st := stateRig(t, 1, nil)
	if !r.deliver(t, record(t, "f1", "build_finished_failed.json", nil)) {
		t.Fatal("failure not delivered")
	}
	if !r.deliver(t, noted("r1", reconciler.ReasonPassed, nil)) {
		t.Fatal("reconciler resolve not delivered")
	}
	// The same resolve again (a second run before the first was applied)
	// is a duplicate for the state store: not sent.
	if !r.deliver(t, noted("r2", reconciler.ReasonPassed, nil)) {
		t.Fatal("second resolve not handled")
	}
	sent := r.srv.events()
	if len(sent) != 2 {
		t.Fatalf("sent %d events, want the failure and one resolve", len(sent))
	}
	res := sent[1]
	want := "deploy-api resolved on main by the reconciler: " + reconciler.ReasonPassed
	if res.Status != incident.StatusPassed || res.Description != want || res.Origin != "reconciler" || res.BuildNumber != 1235 {
		t.Errorf("resolve = %+v, want %q, origin reconciler, build 1235", res, want)
	}
	if it := st.item(t, "acme/deploy-api/main"); it.Open {
		t.Errorf("state still open: %+v", it)
	}
	if !strings.Contains(r.logs.String(), `"origin":"reconciler"`) || !strings.Contains(r.emf.String(), `"reconciled"`) {
		t.Errorf("the delivery's log line and metric do not carry the origin:\n%s", r.logs.String())
	}

	// A 404 resolve (no build to name) reads the same way.
	r2, _ := stateRig(t, 1, nil)
	r2.deliver(t, record(t, "f1", "build_finished_failed.json", nil))
	r2.deliver(t, noted("r1", reconciler.ReasonPipelineGone, func(p *buildkite.Payload) {
		p.Build.Number, p.Build.FinishedAt.Time = 1234, t0.Add(time.Hour)
	}))
	if s := r2.srv.events(); len(s) != 2 || !strings.HasSuffix(s[1].Description, "by the reconciler: "+reconciler.ReasonPipelineGone) {
		t.Errorf("404 resolve = %+v", s)
	}
}

// A failed parent lookup holds a fresh event back (ParentWait) only when
// trying again may help: a 500 or a 429 is retried; a parent Buildkite
// does not know (404) is not waited for, and the child is judged by its
// own branch at once.
func TestParentLookupRetriedOnlyWhenItMayPass(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   *buildkitesim.Fault // nil: the simulator knows no parent (404)
		retried bool
	}{
		{"500: retried", &buildkitesim.Fault{Status: 500}, true},
		{"429: retried", &buildkitesim.Fault{Reset: 30 * time.Second}, true},
		{"404: judged at once", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, sim := apiRig(t)
			if tc.fault != nil {
				parentBuild(t, sim, "main", true)
				sim.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault { f := *tc.fault; return &f })
			}
			child := func(p *buildkite.Payload) { p.Build.Branch, p.Build.State = "main", "failed" }
			rec := sentAgo(record(t, "m1", "build_finished_passed_triggered.json", child), time.Now(), time.Second)
			resp, _ := r.h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{rec}})
			if got := len(resp.BatchItemFailures) == 1; got != tc.retried {
				t.Fatalf("reported failed (retried) %v, want %v; sent %+v", got, tc.retried, r.srv.events())
			}
			if !tc.retried && (len(r.srv.events()) != 1 || r.srv.events()[0].ID != "acme/deploy-api/main") {
				t.Errorf("sent %+v, want the child judged by its own branch", r.srv.events())
			}
		})
	}
}
