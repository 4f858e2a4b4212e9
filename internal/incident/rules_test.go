package incident

import (
	"strings"
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

// TestEventRules covers the rules of issue 10 on the real payload shapes in
// internal/buildkite/testdata, one field changed at a time, so each case
// shows which field decides.
func TestEventRules(t *testing.T) {
	jobs := map[string]string{"JOB_INCIDENTS": "true"}
	prs := map[string]string{"ALERT_PULL_REQUESTS": "true"}
	tests := []struct {
		name    string
		fixture string
		env     map[string]string
		mutate  func(*buildkite.Payload)
		status  string // "" = produces nothing
		reason  string // for status "": part of the reason
	}{
		// 1. build.failing acts only while the build is failing.
		{"failing while failing", "build_failing.json", nil, nil, StatusFailed, ""},
		{"failing carrying failed", "build_failing.json", nil, func(p *buildkite.Payload) { p.Build.State = "failed" }, StatusFailed, ""},
		{"failing carrying passed", "build_failing_late_passed.json", nil, nil, "", "no longer failing"},
		{"failing carrying canceled", "build_failing.json", nil, func(p *buildkite.Payload) { p.Build.State = "canceled" }, "", "no longer failing"},
		{"failing carrying running", "build_failing.json", nil, func(p *buildkite.Payload) { p.Build.State = "running" }, "", "no longer failing"},
		{"failing without a state", "build_failing.json", nil, func(p *buildkite.Payload) { p.Build.State = "" }, "", "no longer failing"},
		{"failing carrying blocked", "build_failing.json", nil, func(p *buildkite.Payload) { p.Build.Blocked = true }, "", "blocked"},

		// 2. A failed job that was retried waits for its retry.
		{"retried failed job", "job_finished_failed_retried.json", jobs, nil, "", "retried"},
		{"retried timed-out job", "job_finished_failed_retried.json", jobs, func(p *buildkite.Payload) { p.Job.State = "timed_out" }, "", "retried"},
		{"retried agent-lost job", "job_finished_agent_lost.json", jobs, func(p *buildkite.Payload) { p.Job.Retried = true }, "", "retried"},
		{"failed job not retried", "job_finished_failed.json", jobs, nil, StatusFailed, ""},
		{"automatic retry passed", "job_finished_passed_auto_retry.json", jobs, nil, StatusFixed, ""},
		{"manual retry passed", "job_finished_passed_retry.json", jobs, nil, StatusFixed, ""},
		{"retry failed again", "job_finished_passed_auto_retry.json", jobs, func(p *buildkite.Payload) { p.Job.State = "failed" }, StatusFailed, ""},

		// 3. Jobs that never ran.
		{"broken job", "job_finished_broken.json", jobs, nil, "", "never ran"},
		{"skipped job", "job_finished_skipped.json", jobs, nil, "", "never ran"},
		{"canceled job", "job_finished_broken.json", jobs, func(p *buildkite.Payload) { p.Job.State = "canceled" }, "", "never ran"},
		{"expired job", "job_finished_broken.json", jobs, func(p *buildkite.Payload) { p.Job.State = "expired" }, StatusError, ""},
		{"timed-out job", "job_finished_timed_out.json", jobs, nil, StatusError, ""},

		// 4. Pull-request builds, whatever the branch is called.
		{"fork PR named main", "build_finished_failed_fork_pr.json", nil, nil, "", "pull-request"},
		{"fork PR named main, PRs on", "build_finished_failed_fork_pr.json", prs, nil, StatusFailed, ""},
		{"PR passing", "build_finished_failed_fork_pr.json", nil, func(p *buildkite.Payload) { p.Build.State = "passed" }, "", "pull-request"},
		{"PR build.failing", "build_failing.json", nil, func(p *buildkite.Payload) {
			p.Build.PullRequest = &buildkite.PullRequest{ID: "7", Base: "main"}
		}, "", "pull-request"},
		{"PR job", "job_finished_failed.json", jobs, func(p *buildkite.Payload) {
			p.Build.PullRequest = &buildkite.PullRequest{ID: "7", Base: "main"}
		}, "", "pull-request"},
		{"empty pull_request object", "build_finished_failed.json", nil, func(p *buildkite.Payload) {
			p.Build.PullRequest = &buildkite.PullRequest{}
		}, StatusFailed, ""},
		{"PR on another branch", "build_finished_feature_branch.json", map[string]string{"ALERT_BRANCHES": "*"}, nil, "", "pull-request"},

		// 5. Canceled builds: ALERT_ON_CANCELED alone decides (no webhook
		// field says who canceled; see the README).
		{"canceled, default", "build_finished_canceled.json", nil, nil, "", "canceled"},
		{"canceled, enabled", "build_finished_canceled.json", map[string]string{"ALERT_ON_CANCELED": "true"}, nil, StatusFailed, ""},

		// Rebuilds and triggered builds map as any build (their order and
		// parent are the state store's and the REST API's business).
		{"rebuild failed", "build_finished_failed_rebuild.json", nil, nil, StatusFailed, ""},
		{"triggered build passed", "build_finished_passed_triggered.json", nil, nil, StatusPassed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, tc.fixture, "")
			if tc.mutate != nil {
				tc.mutate(p)
			}
			d := rules(t, tc.env).Classify(p)
			if d.Status != tc.status || d.Act != (tc.status != "") {
				t.Fatalf("Classify = %+v, want status %q", d, tc.status)
			}
			if !d.Act && !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q, want it to say %q", d.Reason, tc.reason)
			}
		})
	}
}

// TestTriggeredByParent: with a Buildkite API token configured, the
// receiver's Classify leaves the branch and pull-request checks of a
// triggered build to the dispatcher, which judges them by the parent
// (ClassifyAs with its Judge). Everything else (pipeline, state, blocked,
// jobs) is still decided up front, and builds that were not triggered
// are judged exactly as without the token.
func TestTriggeredByParent(t *testing.T) {
	api := map[string]string{"BUILDKITE_API_TOKEN": "bkua_x"}
	arn := map[string]string{"BUILDKITE_API_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:bk"}
	parentPR := &Judge{Branch: "main", PullRequest: true, Parent: true}
	parentMain := &Judge{Branch: "main", Parent: true}
	parentFeature := &Judge{Branch: "feature/x", DefaultBranch: "main", Parent: true}
	onBranch := func(b string) func(*buildkite.Payload) {
		return func(p *buildkite.Payload) { p.Build.Branch, p.Build.State = b, "failed" }
	}
	tests := []struct {
		name    string
		fixture string
		env     map[string]string
		mutate  func(*buildkite.Payload)
		judge   *Judge // nil: Classify (the receiver)
		act     bool
		reason  string
	}{
		{"no token: a triggered child on release is dropped", "build_finished_passed_triggered.json", nil, onBranch("release"), nil, false, "branch not in ALERT_BRANCHES"},
		{"token: a triggered child on release is queued", "build_finished_passed_triggered.json", api, onBranch("release"), nil, true, ""},
		{"secret ARN counts as a token", "build_finished_passed_triggered.json", arn, onBranch("release"), nil, true, ""},
		{"token: a triggered PR child is queued", "build_finished_passed_triggered.json", api, func(p *buildkite.Payload) {
			p.Build.PullRequest = &buildkite.PullRequest{ID: "7"}
		}, nil, true, ""},
		{"token: other pipelines still dropped", "build_finished_passed_triggered.json", map[string]string{"BUILDKITE_API_TOKEN": "x", "ALERT_PIPELINES": "web-*"}, onBranch("release"), nil, false, "ALERT_PIPELINES"},
		{"token: a blocked triggered build still dropped", "build_finished_passed_triggered.json", api, func(p *buildkite.Payload) { p.Build.Blocked = true }, nil, false, "blocked"},
		{"token: a build not triggered is judged by its branch", "build_finished_feature_branch.json", api, nil, nil, false, "branch not in ALERT_BRANCHES"},
		{"token: a fork PR not triggered is still dropped", "build_finished_failed_fork_pr.json", api, nil, nil, false, "pull-request"},
		{"parent a PR build: dropped", "build_finished_passed_triggered.json", api, nil, parentPR, false, "triggered from a pull-request build"},
		{"parent a PR build, PRs alert", "build_finished_passed_triggered.json", map[string]string{"ALERT_PULL_REQUESTS": "true"}, nil, parentPR, true, ""},
		{"parent on main, child on release: acts", "build_finished_passed_triggered.json", api, onBranch("release"), parentMain, true, ""},
		{"parent on a feature branch: dropped", "build_finished_passed_triggered.json", api, nil, parentFeature, false, "triggered from a build whose branch"},
		{"parent on a feature branch that alerts", "build_finished_passed_triggered.json", map[string]string{"ALERT_BRANCHES": "feature/*"}, onBranch("main"), parentFeature, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, tc.fixture, "")
			if tc.mutate != nil {
				tc.mutate(p)
			}
			r := rules(t, tc.env)
			var d Decision
			if tc.judge == nil {
				d = r.Classify(p)
			} else {
				d = r.ClassifyAs(p, tc.judge)
			}
			if d.Act != tc.act || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("decision %+v, want act %v, reason %q", d, tc.act, tc.reason)
			}
			if d.Act && d.ID != "acme/deploy-api/"+p.Build.Branch {
				t.Errorf("id %q: the incident keeps the child's own branch %q", d.ID, p.Build.Branch)
			}
		})
	}
}
