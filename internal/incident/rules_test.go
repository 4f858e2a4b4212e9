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
