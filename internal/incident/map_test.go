package incident

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var received = time.Date(2024, 8, 5, 12, 0, 3, 456_000_000, time.UTC)

func load(t testing.TB, name, header string) *buildkite.Payload {
	t.Helper()
	p, err := buildkite.Parse(testkit.Fixture(t, name), header)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func rules(t testing.TB, env map[string]string) Rules {
	t.Helper()
	r := config.NewReader(config.Map(env))
	rs := LoadRules(r)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestMapGolden maps real payloads and compares with reviewed SQIBS JSON in
// testdata/golden (go test -run TestMapGolden -update rewrites them; review
// the diff before committing).
func TestMapGolden(t *testing.T) {
	jobs := map[string]string{"JOB_INCIDENTS": "true"}
	tests := []struct {
		golden  string
		fixture string
		header  string
		env     map[string]string
	}{
		{"build_failed", "build_finished_failed.json", "", nil},
		{"build_passed", "build_finished_passed.json", "", nil},
		{"build_failing", "build_failing.json", "", nil},
		{"build_failing_off", "build_failing.json", "", map[string]string{"ALERT_ON_FAILING": "false"}},
		{"build_canceled_default", "build_finished_canceled.json", "", nil},
		{"build_canceled_enabled", "build_finished_canceled.json", "", map[string]string{"ALERT_ON_CANCELED": "true"}},
		{"build_blocked", "build_finished_blocked.json", "", nil},
		{"build_skipped", "build_finished_skipped.json", "", nil},
		{"build_not_run", "build_finished_not_run.json", "", nil},
		{"build_scheduled", "build_scheduled.json", "", nil},
		{"build_running", "build_running.json", "", nil},
		{"branch_filtered", "build_finished_feature_branch.json", "", nil},
		{"branch_glob", "build_finished_feature_branch.json", "", map[string]string{"ALERT_BRANCHES": "main,feature/*", "ALERT_PULL_REQUESTS": "true"}},
		{"branch_glob_pull_request", "build_finished_feature_branch.json", "", map[string]string{"ALERT_BRANCHES": "main,feature/*"}},
		{"build_failing_late_passed", "build_failing_late_passed.json", "", nil},
		{"fork_pr_main", "build_finished_failed_fork_pr.json", "", nil},
		{"fork_pr_main_enabled", "build_finished_failed_fork_pr.json", "", map[string]string{"ALERT_PULL_REQUESTS": "true"}},
		{"build_rebuild_failed", "build_finished_failed_rebuild.json", "", nil},
		{"build_triggered_passed", "build_finished_passed_triggered.json", "", nil},
		{"author_email_username", "author_email_username.json", "", nil},
		{"job_failed_retried", "job_finished_failed_retried.json", "", jobs},
		{"job_auto_retry_passed", "job_finished_passed_auto_retry.json", "", jobs},
		{"job_broken", "job_finished_broken.json", "", jobs},
		{"job_skipped", "job_finished_skipped.json", "", jobs},
		{"job_parallel_failed", "job_finished_failed_parallel.json", "", jobs},
		{"pipeline_filtered", "build_finished_failed.json", "", map[string]string{"ALERT_PIPELINES": "web-*"}},
		{"severity_critical", "build_finished_failed.json", "", map[string]string{"SEVERITY": "critical"}},
		{"job_failed", "job_finished_failed.json", "", jobs},
		{"job_failed_off", "job_finished_failed.json", "", nil},
		{"job_soft_failed", "job_finished_soft_failed.json", "", jobs},
		{"job_timed_out", "job_finished_timed_out.json", "", jobs},
		{"job_agent_lost", "job_finished_agent_lost.json", "", jobs},
		{"job_passed", "job_finished_passed.json", "", jobs},
		{"job_retry_passed", "job_finished_passed_retry.json", "", jobs},
		{"legacy_project", "legacy_project.json", "build.finished", nil},
		{"author_string", "author_string.json", "", nil},
		{"nulls", "nulls.json", "", nil},
		{"large", "build_finished_large.json", "", nil},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			seen[tc.golden+".json"] = true
			p := load(t, tc.fixture, tc.header)
			pl, d, ok := rules(t, tc.env).Map(p, received)
			var got []byte
			if ok {
				b, err := json.MarshalIndent(pl, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				got = b
			} else {
				got, _ = json.MarshalIndent(map[string]string{"ignored": d.Reason}, "", "  ")
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", tc.golden+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("mapping of %s differs from %s:\ngot:\n%s\nwant:\n%s", tc.fixture, path, got, want)
			}
			if ok {
				assertSeedKeysFirst(t, got)
				// Decision and payload agree: the receiver's Classify is the dispatcher's.
				if c := rules(t, tc.env).Classify(p); !c.Act || c.ID != pl.Event.ID || c.Status != pl.Event.Status {
					t.Errorf("Classify = %+v, Map = %+v", c, pl.Event)
				}
			}
		})
	}
	// Every golden file belongs to a case: no stale expectations lying around.
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("golden file %s has no test case", f)
		}
	}
}

// assertSeedKeysFirst checks the wire order of the first six keys.
func assertSeedKeysFirst(t *testing.T, b []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var keys []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
		case string:
			if depth == 2 && len(keys) < 6 {
				keys = append(keys, v)
				if _, err := dec.Token(); err != nil { // skip the value
					t.Fatal(err)
				}
			}
		}
		if len(keys) == 6 {
			break
		}
	}
	want := "id,status,severity,description,host,timestamp"
	if got := strings.Join(keys, ","); got != want {
		t.Errorf("first keys = %s, want %s", got, want)
	}
}

// The trigger and the resolve of one incident carry the same id.
func TestTriggerAndResolveShareID(t *testing.T) {
	r := DefaultRules()
	fail, _, ok1 := r.Map(load(t, "build_finished_failed.json", ""), received)
	pass, _, ok2 := r.Map(load(t, "build_finished_passed.json", ""), received)
	if !ok1 || !ok2 {
		t.Fatal("expected both to map")
	}
	if fail.Event.ID != pass.Event.ID || fail.Event.ID != "acme/deploy-api/main" {
		t.Errorf("ids %q / %q", fail.Event.ID, pass.Event.ID)
	}
	jr := rules(t, map[string]string{"JOB_INCIDENTS": "true"})
	jf, _, _ := jr.Map(load(t, "job_finished_failed.json", ""), received)
	jp, _, _ := jr.Map(load(t, "job_finished_passed_retry.json", ""), received)
	if jf.Event.ID != jp.Event.ID || !strings.HasPrefix(jf.Event.ID, "acme/deploy-api/main#") {
		t.Errorf("job ids %q / %q", jf.Event.ID, jp.Event.ID)
	}
}

func TestClassifyEdges(t *testing.T) {
	base := func() *buildkite.Payload {
		return &buildkite.Payload{
			Event:    "build.finished",
			Build:    &buildkite.Build{State: "failed", Branch: "main", Number: 1},
			Pipeline: &buildkite.Pipeline{Slug: "app", WebURL: "https://buildkite.com/org/app"},
		}
	}
	tests := []struct {
		name   string
		env    map[string]string
		mutate func(*buildkite.Payload)
		wantID string // "" = ignored
		status string
	}{
		{"default branch from payload", nil, func(p *buildkite.Payload) { p.Pipeline.DefaultBranch = "trunk"; p.Build.Branch = "trunk" }, "org/app/trunk", StatusFailed},
		{"main is not default when payload says trunk", nil, func(p *buildkite.Payload) { p.Pipeline.DefaultBranch = "trunk" }, "", ""},
		{"master when no default", nil, func(p *buildkite.Payload) { p.Build.Branch = "master" }, "org/app/master", StatusFailed},
		{"star matches slashes", map[string]string{"ALERT_BRANCHES": "*"}, func(p *buildkite.Payload) { p.Build.Branch = "release/v1/x" }, "org/app/release/v1/x", StatusFailed},
		{"org fallback", nil, func(p *buildkite.Payload) { p.Pipeline.WebURL = "" }, "buildkite/app/main", StatusFailed},
		{"org from build api url", nil, func(p *buildkite.Payload) {
			p.Pipeline.WebURL = ""
			p.Build.URL = "https://api.buildkite.com/v2/organizations/zeta/pipelines/app/builds/1"
		}, "zeta/app/main", StatusFailed},
		{"no build", nil, func(p *buildkite.Payload) { p.Build = nil }, "", ""},
		{"no pipeline", nil, func(p *buildkite.Payload) { p.Pipeline = nil }, "", ""},
		{"empty branch", map[string]string{"ALERT_BRANCHES": "*"}, func(p *buildkite.Payload) { p.Build.Branch = "" }, "", ""},
		{"job without name", map[string]string{"JOB_INCIDENTS": "true"}, func(p *buildkite.Payload) {
			p.Event = "job.finished"
			p.Job = &buildkite.Job{Type: "script", State: "failed"}
		}, "", ""},
		{"waiter job", map[string]string{"JOB_INCIDENTS": "true"}, func(p *buildkite.Payload) {
			p.Event = "job.finished"
			p.Job = &buildkite.Job{Type: "waiter", State: "failed", Name: "w"}
		}, "", ""},
		{"job name when no step key", map[string]string{"JOB_INCIDENTS": "true"}, func(p *buildkite.Payload) {
			p.Event = "job.finished"
			p.Job = &buildkite.Job{Type: "script", State: "failed", Name: ":go: test"}
		}, "org/app/main#:go: test", StatusFailed},
		{"job canceled by user is not an outcome", map[string]string{"JOB_INCIDENTS": "true"}, func(p *buildkite.Payload) {
			p.Event = "job.finished"
			p.Job = &buildkite.Job{Type: "script", State: "canceled", StepKey: "t"}
		}, "", ""},
		{"job expired", map[string]string{"JOB_INCIDENTS": "true"}, func(p *buildkite.Payload) {
			p.Event = "job.finished"
			p.Job = &buildkite.Job{Type: "script", State: "expired", StepKey: "t"}
		}, "org/app/main#t", StatusError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.mutate(p)
			d := rules(t, tc.env).Classify(p)
			if d.ID != tc.wantID || d.Status != tc.status || d.Act != (tc.wantID != "") {
				t.Errorf("Classify = %+v, want id %q status %q", d, tc.wantID, tc.status)
			}
			if !d.Act && d.Reason == "" {
				t.Error("ignored without a reason")
			}
		})
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		p, s string
		want bool
	}{
		{"main", "main", true}, {"main", "mainx", false}, {"*", "", true}, {"*", "a/b", true},
		{"feature/*", "feature/x/y", true}, {"feature/*", "feat/x", false}, {"v?", "v1", true},
		{"v?", "v10", false}, {"*-prod", "api-prod", true}, {"*-prod", "api-prod-2", false},
		{"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false}, {"**", "x", true},
		{"feat-?", "feat-é", true}, {"feat-?", "feat-éé", false}, {"?", "日", true}, {"*é", "café", true},
	}
	for _, tc := range tests {
		if got := Glob(tc.p, tc.s); got != tc.want {
			t.Errorf("Glob(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}

func TestLoadRulesErrors(t *testing.T) {
	for _, tc := range []struct{ name, val string }{
		{"ALERT_ON_FAILING", "maybe"}, {"ALERT_ON_CANCELED", "2"}, {"JOB_INCIDENTS", "yesplease"},
		{"SEVERITY", "urgent"}, {"ALERT_BRANCHES", " , "},
		{"ALERT_AFTER_FAILURES", "0"}, {"ALERT_AFTER_FAILURES", "two"},
	} {
		r := config.NewReader(config.Map(map[string]string{tc.name: tc.val}))
		LoadRules(r)
		if err := r.Err(); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: error %v does not name the variable", tc.name, tc.val, err)
		}
	}
}

func TestAlertAfterFailures(t *testing.T) {
	if got := DefaultRules().AlertAfterFailures; got != 1 {
		t.Errorf("default ALERT_AFTER_FAILURES = %d; want 1", got)
	}
	if got := rules(t, map[string]string{"ALERT_AFTER_FAILURES": "3"}).AlertAfterFailures; got != 3 {
		t.Errorf("ALERT_AFTER_FAILURES=3 read as %d", got)
	}
}

func BenchmarkMap(b *testing.B) {
	p := load(b, "build_finished_large.json", "")
	r := DefaultRules()
	b.ReportAllocs()
	for b.Loop() {
		pl, _, ok := r.Map(p, received)
		if !ok {
			b.Fatal("not mapped")
		}
		if _, err := json.Marshal(pl); err != nil {
			b.Fatal(err)
		}
	}
}
