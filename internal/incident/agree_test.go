package incident

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// The receiver decides with Classify before queuing; the dispatcher decides
// again with Map on what the queue carried. They must agree on every event:
// one the receiver queues must map to the same id and status, one it drops
// must never map. Every fixture, a few rule sets, and mutations that change
// how fields survive the queue's encoding.
func TestClassifyAgreesWithMapAfterTheQueue(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "buildkite", "testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	envs := []map[string]string{
		nil,
		{"JOB_INCIDENTS": "true"},
		{"ALERT_ON_CANCELED": "true", "ALERT_BRANCHES": "*", "JOB_INCIDENTS": "true", "ALERT_ON_FAILING": "false"},
	}
	mutations := map[string]func(string) string{
		"as is":              func(s string) string { return s },
		"empty retry_source": func(s string) string { return strings.Replace(s, `"retry_source": null`, `"retry_source": {}`, 1) },
		"no default_branch": func(s string) string {
			return strings.Replace(s, `"default_branch": "main"`, `"default_branch": ""`, 1)
		},
	}
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for mname, mutate := range mutations {
			body := []byte(mutate(string(raw)))
			for _, env := range envs {
				r := rules(t, env)
				p, err := buildkite.Parse(body, "build.finished") // legacy fixtures have no event key
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				d := r.Classify(p)
				msg, err := queue.NewMessage(p, d.ID, "req-1", received)
				if err != nil {
					t.Fatal(err)
				}
				e, err := queue.Decode(msg.Body)
				if err != nil {
					t.Fatal(err)
				}
				_, d2, ok := r.Map(e.Payload, e.ReceivedAt)
				if ok != d.Act || d2.ID != d.ID || d2.Status != d.Status {
					t.Errorf("%s, %s, %v: receiver %+v, dispatcher (ok %v) %+v", filepath.Base(f), mname, env, d, ok, d2)
				}
				checked++
			}
		}
	}
	t.Logf("%d fixture × mutation × rules cases agree", checked)
}

// With a Buildkite API token the receiver defers the branch and PR checks
// of triggered builds, so it may queue what the dispatcher then drops, but
// never the reverse: whatever the dispatcher would send, judged by the
// build's own branch or by any parent, the receiver queued.
func TestReceiverQueuesWhatTheParentMayDecide(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "buildkite", "testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	judges := []*Judge{nil, {Branch: "main", Parent: true}, {Branch: "main", PullRequest: true, Parent: true}, {Branch: "feature/x", Parent: true}}
	deferred := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, env := range []map[string]string{{"BUILDKITE_API_TOKEN": "x"}, {"BUILDKITE_API_TOKEN": "x", "JOB_INCIDENTS": "true", "ALERT_BRANCHES": "release"}} {
			r := rules(t, env)
			for _, branch := range []string{"", "main", "release", "feature/x"} {
				p, err := buildkite.Parse(raw, "build.finished")
				if err != nil {
					t.Fatal(err)
				}
				if branch != "" && p.Build != nil {
					p.Build.Branch = branch
				}
				recv := r.Classify(p)
				for _, j := range judges {
					if j != nil && !Triggered(p.Build) {
						continue // the dispatcher asks for a parent only for triggered builds
					}
					if d := r.ClassifyAs(p, j); d.Act && (!recv.Act || recv.ID != d.ID || recv.Status != d.Status) {
						t.Errorf("%s on %q, judge %+v: dispatcher %+v but receiver %+v", filepath.Base(f), branch, j, d, recv)
					}
					if recv.Act && !r.ClassifyAs(p, j).Act {
						deferred++
					}
				}
			}
		}
	}
	if deferred == 0 {
		t.Error("no case where the receiver queued what the parent then dropped: the deferral is untested")
	}
}

// Glob against the regexp it stands for, on random ASCII and non-ASCII
// patterns: ? is one character (not one byte), * any run including '/'.
func TestGlobMatchesItsRegexp(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	gen := func(alphabet []rune, n int) string {
		var b strings.Builder
		for range n {
			b.WriteRune(alphabet[rnd.IntN(len(alphabet))])
		}
		return b.String()
	}
	patAlpha, strAlpha := []rune("ab/é日*?"), []rune("ab/é日*?") // a * or ? in s is a literal
	for range 50_000 {
		p, s := gen(patAlpha, rnd.IntN(6)), gen(strAlpha, rnd.IntN(7))
		re := strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(p))
		want := regexp.MustCompile("^(?s)" + re + "$").MatchString(s)
		if got := Glob(p, s); got != want {
			t.Fatalf("Glob(%q, %q) = %v, want %v", p, s, got, want)
		}
	}
}

// "default" is a word of ALERT_BRANCHES only (DESIGN §2); in ALERT_PIPELINES
// it is a plain glob that matches a pipeline named default.
func TestDefaultWordOnlyForBranches(t *testing.T) {
	r := rules(t, map[string]string{"ALERT_PIPELINES": "default", "ALERT_BRANCHES": "*"})
	raw := testkit.Fixture(t, "build_finished_failed.json")
	for slug, want := range map[string]bool{"default": true, "main": false, "master": false} {
		p, err := buildkite.Parse([]byte(strings.ReplaceAll(string(raw), "deploy-api", slug)), "")
		if err != nil {
			t.Fatal(err)
		}
		if d := r.Classify(p); d.Act != want {
			t.Errorf("ALERT_PIPELINES=default, pipeline %q: act %v (%s), want %v", slug, d.Act, d.Reason, want)
		}
	}
}
