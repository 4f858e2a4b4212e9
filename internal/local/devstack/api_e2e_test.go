package devstack

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/local/buildkitesim"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
)

// The Buildkite REST API stories of issue 13 through make dev's stack: its
// Buildkite API simulator learns the builds from the webhooks the receiver
// takes, the dispatcher enriches and judges triggered builds through it,
// and the reconciler runs on its interval.

const apiHookToken = "api-e2e-token"

// jobWebhook is a job.finished fixture as job id of build n of deploy-api.
func jobWebhook(t *testing.T, fixture, id string, n int) []byte {
	t.Helper()
	m := fixtureMap(t, fixture)
	m["build"].(map[string]any)["number"] = n
	m["job"].(map[string]any)["id"] = id
	return marshal(t, m)
}

// webApp turns a build fixture into build n of acme/web-app, the pipeline
// whose trigger step starts build_finished_passed_triggered.json's build
// (#5678 there).
func webApp(t *testing.T, fixture string, n int) map[string]any {
	t.Helper()
	m := fixtureMap(t, fixture)
	b := m["build"].(map[string]any)
	b["number"], b["id"] = n, fmt.Sprintf("web-app-build-%d", n)
	b["web_url"] = fmt.Sprintf("https://buildkite.com/acme/web-app/builds/%d", n)
	b["url"] = fmt.Sprintf("https://api.buildkite.com/v2/organizations/acme/pipelines/web-app/builds/%d", n)
	p := m["pipeline"].(map[string]any)
	p["slug"], p["id"], p["name"] = "web-app", "pipeline-web-app", "Web App"
	p["web_url"], p["url"] = "https://buildkite.com/acme/web-app", "https://api.buildkite.com/v2/organizations/acme/pipelines/web-app"
	return m
}

// triggeredChild is deploy-api's build n, failed on main, started by a
// trigger step of web-app #parent.
func triggeredChild(t *testing.T, n, parent int) []byte {
	t.Helper()
	m := fixtureMap(t, "build_finished_passed_triggered.json")
	b := m["build"].(map[string]any)
	b["number"], b["id"], b["state"] = n, fmt.Sprintf("build-main-%d", n), "failed"
	b["triggered_from"].(map[string]any)["build_number"] = parent
	return marshal(t, m)
}

func parse(t *testing.T, body []byte) *buildkite.Payload {
	t.Helper()
	p, err := buildkite.Parse(body, "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A failed build's incident names its failed jobs: the job webhooks are
// dropped by the rules (JOB_INCIDENTS is off) but the simulator saw them,
// as Buildkite's API knows the jobs of every build.
func TestEndToEndFailedJobsNamed(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": apiHookToken}, apiHookToken)
	rec := &bodies{}
	h.s.Sim.SetFault(rec.hook)
	for _, j := range [][]byte{
		jobWebhook(t, "job_finished_failed.json", "job-test", 60),
		jobWebhook(t, "job_finished_failed_parallel.json", "job-rspec-2", 60),
		jobWebhook(t, "job_finished_passed.json", "job-lint", 60),
	} {
		if code, body := h.send(j, ""); code != 202 || !strings.Contains(body, "JOB_INCIDENTS") {
			t.Fatalf("job webhook: %d %s, want 202 (job incidents off)", code, body)
		}
	}
	h.mustQueue(payload(t, "build_finished_failed.json", 60, "failed", "main"))
	h.wait("the incident", func(s *sqibssim.Server) bool { _, ok := s.Open("acme/deploy-api/main"); return ok })
	in, _ := h.s.Sim.Open("acme/deploy-api/main")
	if want := "deploy-api #60 failed on main: Fix flaky test — failed: test, rspec (2/4)"; !strings.HasSuffix(in.Title, want) {
		t.Errorf("incident title %q, want it to end in %q", in.Title, want)
	}
	got := rec.list()[0]
	for _, s := range []string{`"failed_jobs":[{"name":"test","state":"failed","exit_status":1,"web_url":"https://buildkite.com/acme/deploy-api/builds/`,
		`{"name":"rspec (2/4)","state":"failed","exit_status":1,"web_url":"https://buildkite.com/acme/deploy-api/builds/`} {
		if !strings.Contains(got, s) {
			t.Errorf("SQIBS payload lacks %s:\n%s", s, got)
		}
	}
	for _, s := range []string{"@", "SECRET-", DefaultBuildkiteAPIToken, "lint"} {
		if strings.Contains(got, s) {
			t.Errorf("SQIBS payload holds %q:\n%s", s, got)
		}
	}
	if strings.Contains(h.logs.String(), DefaultBuildkiteAPIToken) {
		t.Error("the logs hold the API token")
	}
}

// A webhook lost on purpose: the build that passed is in Buildkite (the
// simulator), its build.finished never sent. The reconciler finds it on
// its next run and the incident resolves, through the queue and the state
// store, within two intervals.
func TestEndToEndLostWebhookReconciled(t *testing.T) {
	const every = 1500 * time.Millisecond
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": apiHookToken}, apiHookToken,
		func(o *Options) { o.ReconcileEvery = every })
	if !strings.Contains(h.out.String(), "reconciler every 1.5s") {
		t.Errorf("stdout does not name the interval:\n%s", h.out.String())
	}
	rec := &bodies{}
	h.s.Sim.SetFault(rec.hook)
	const id = "acme/deploy-api/main"
	h.mustQueue(payload(t, "build_finished_failed.json", 70, "failed", "main"))
	h.wait("the incident", func(s *sqibssim.Server) bool { _, ok := s.Open(id); return ok })

	lost := time.Now()
	h.s.Buildkite.Record(parse(t, payload(t, "build_finished_passed.json", 71, "passed", "main")))
	h.wait("the reconciler's resolve", func(s *sqibssim.Server) bool {
		in := s.Incidents()
		return len(in) == 1 && in[0].Status == sqibssim.StatusResolved
	})
	if took := time.Since(lost); took > 2*every {
		t.Errorf("resolved %s after the lost webhook, want within two intervals (%s)", took.Round(time.Millisecond), 2*every)
	}
	resolve := rec.list()[len(rec.list())-1]
	for _, s := range []string{`"status":"PASSED"`, `"origin":"reconciler"`, `"build_number":71`,
		`"description":"deploy-api resolved on main by the reconciler: a newer build passed; its webhook was not received"`} {
		if !strings.Contains(resolve, s) {
			t.Errorf("the resolve lacks %s:\n%s", s, resolve)
		}
	}
	h.waitLogs(`"msg":"reconcile"`, 1)
	if !strings.Contains(h.logs.String(), `"resolved":1`) {
		t.Errorf("no reconcile summary with the resolve:\n%s", h.logs.String())
	}
	// Later runs find nothing open: no second resolve.
	time.Sleep(every + 200*time.Millisecond)
	if n := len(rec.list()); n != 2 {
		t.Errorf("SQIBS got %d calls, want the failure and one resolve", n)
	}
}

// A build triggered by a pull-request build of web-app runs on deploy-api's
// main: judged by its parent, it pages nothing. The same child of a main
// build of web-app pages.
func TestEndToEndTriggeredChildOfPullRequest(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": apiHookToken}, apiHookToken)
	rec := &bodies{}
	h.s.Sim.SetFault(rec.hook)

	// The parent's own webhook: a PR build, dropped, but Buildkite has it.
	pr := webApp(t, "build_finished_failed_fork_pr.json", 5678)
	if code, body := h.send(marshal(t, pr), ""); code != 202 || !strings.Contains(body, "pull-request") {
		t.Fatalf("the parent PR build: %d %s, want 202", code, body)
	}
	// The child on main is queued: only the dispatcher can ask for its parent.
	h.mustQueue(triggeredChild(t, 90, 5678))
	h.waitLogs("triggered from a pull-request build", 1)
	if in := h.s.Sim.Incidents(); len(in) != 0 || len(rec.list()) != 0 {
		t.Errorf("incidents %+v, calls %d: the child of a PR build paged", in, len(rec.list()))
	}

	h.s.Buildkite.Record(parse(t, marshal(t, webApp(t, "build_finished_passed.json", 5679))))
	h.mustQueue(triggeredChild(t, 91, 5679))
	h.wait("the child of a main build", func(s *sqibssim.Server) bool { _, ok := s.Open("acme/deploy-api/main"); return ok })
}

// The API down: a 500, an answer slower than the 1 s budget, a 429. Every
// incident is delivered all the same, without failed_jobs; the triggered
// child, whose parent no one can tell, is retried for ParentWait (not to
// page for a pull request's child during a hiccup), then judged by its
// own branch; each skip is counted and its class logged.
func TestEndToEndAPIDown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault buildkitesim.Fault
		class string
	}{
		{"500", buildkitesim.Fault{Status: 500}, "unavailable"},
		{"slow", buildkitesim.Fault{Delay: 3 * time.Second}, "timeout"},
		{"429", buildkitesim.Fault{Reset: 30 * time.Second}, "rate_limited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const wait = 5 * time.Second // past a slow case's first lookups (two 1 s budgets)
			h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": apiHookToken}, apiHookToken,
				func(o *Options) { o.ParentWait = wait })
			rec := &bodies{}
			h.s.Sim.SetFault(rec.hook)
			h.send(jobWebhook(t, "job_finished_failed.json", "job-test", 80), "")
			h.send(marshal(t, webApp(t, "build_finished_failed_fork_pr.json", 5678)), "")
			h.s.Buildkite.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault { f := tc.fault; return &f })

			start := time.Now()
			h.mustQueue(payload(t, "build_finished_failed.json", 80, "failed", "main"))
			h.mustQueue(triggeredChild(t, 81, 5678)) // its parent is a PR build, but no one can tell
			h.wait("the build's failure", func(s *sqibssim.Server) bool { return len(rec.list()) >= 1 && s.Calls() >= 1 })
			if took := time.Since(start); took > 6*time.Second {
				t.Errorf("delivered after %s: the API held the page back", took.Round(time.Millisecond))
			}
			h.wait("the child's failure", func(s *sqibssim.Server) bool { return len(rec.list()) >= 2 && s.Calls() >= 2 })
			if took := time.Since(start); took < wait {
				t.Errorf("the child was judged after %s, before ParentWait (%s): a hiccup would page for a pull request's child", took, wait)
			}
			for _, b := range rec.list() {
				if strings.Contains(b, "failed_jobs") || strings.Contains(b, "— failed") || !strings.Contains(b, `"status":"FAILED"`) {
					t.Errorf("want an unenriched FAILED: %s", b)
				}
			}
			logs := h.logs.String()
			for _, s := range []string{`"enrichment_skipped":1`, `"parent_lookup_failed":1`, `"error_class":"` + tc.class + `"`,
				"triggered build's parent not looked up: will retry", "triggered build's parent not looked up for ParentWait: judged by its own branch"} {
				if !strings.Contains(logs, s) {
					t.Errorf("logs lack %s", s)
				}
			}
		})
	}
}
