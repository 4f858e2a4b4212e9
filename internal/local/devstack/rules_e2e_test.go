package devstack

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// fixtureMap is a fixture from internal/buildkite/testdata as a map, to be
// changed field by field.
func fixtureMap(t *testing.T, name string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(testkit.Fixture(t, name), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func marshal(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bodies records every payload SQIBS processed.
type bodies struct {
	mu  sync.Mutex
	all []string
}

func (b *bodies) hook(_ int, body []byte) *sqibssim.Fault {
	b.mu.Lock()
	b.all = append(b.all, string(body))
	b.mu.Unlock()
	return nil
}

func (b *bodies) list() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.all...)
}

// The README's quick start, as written: the two fixtures sent unchanged,
// the failure and then the same build passing on a retry, open and resolve
// the incident (with the incident state on, as in make dev).
func TestEndToEndQuickStart(t *testing.T) {
	h := start(t, nil, "local-webhook-token")
	for _, f := range []string{"build_finished_failed.json", "build_finished_passed.json"} {
		h.mustQueue(testkit.Fixture(t, f))
	}
	h.wait("the incident opened and resolved", func(s *sqibssim.Server) bool {
		in := s.Incidents()
		return len(in) == 1 && in[0].ID == "acme/deploy-api/main" && in[0].Status == sqibssim.StatusResolved
	})
}

// TestEndToEndEventRules plays the issue-10 stories through make dev's
// stack: what a real Buildkite sends, and what the on-call engineer must
// (not) be paged for.
func TestEndToEndEventRules(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "rules-token", "JOB_INCIDENTS": "true"}, "rules-token")
	rec := &bodies{}
	h.s.Sim.SetFault(rec.hook)
	const id = "acme/deploy-api/main"
	// settle waits until SQIBS has processed n calls in all.
	settle := func(what string, n int) {
		t.Helper()
		h.wait(what, func(s *sqibssim.Server) bool { return len(rec.list()) >= n && s.Calls() >= n })
	}
	incidents := func(id string) []sqibssim.Incident {
		var out []sqibssim.Incident
		for _, in := range h.s.Sim.Incidents() {
			if in.ID == id {
				out = append(out, in)
			}
		}
		return out
	}

	t.Run("late build.failing after the pass pages nothing", func(t *testing.T) {
		h.mustQueue(payload(t, "build_finished_passed.json", 100, "passed", "main"))
		settle("the pass", 1)
		late := fixtureMap(t, "build_failing_late_passed.json")
		late["build"].(map[string]any)["number"] = 100
		if code, body := h.send(marshal(t, late), ""); code != 202 || !strings.Contains(body, "no longer failing") {
			t.Errorf("late build.failing: %d %s, want 202 ignored", code, body)
		}
		if in := incidents(id); len(in) != 0 {
			t.Errorf("incidents %+v, want none", in)
		}
	})

	t.Run("fail, pass, fail again within 5 minutes opens twice", func(t *testing.T) {
		before := len(rec.list())
		build := func(state, finished string) []byte {
			m := fixtureMap(t, "build_finished_failed.json")
			b := m["build"].(map[string]any)
			b["number"], b["id"], b["state"], b["finished_at"] = 200, "build-main-200", state, finished
			return marshal(t, m)
		}
		// One build: a failure, a retry that made it pass, a second failure
		// after a later retry, all inside SQS's deduplication window.
		h.mustQueue(build("failed", "2024-08-05T12:00:00Z"))
		h.mustQueue(build("passed", "2024-08-05T12:01:00Z"))
		h.mustQueue(build("failed", "2024-08-05T12:02:00Z"))
		// And a true redelivery of the last one, which must stay one event.
		h.mustQueue(build("failed", "2024-08-05T12:02:00Z"))
		settle("three transitions", before+3)
		in := incidents(id)
		if len(in) != 2 || in[0].Status != sqibssim.StatusResolved || in[1].Status != sqibssim.StatusOpen {
			t.Fatalf("incidents %+v, want one resolved and one open", in)
		}
		time.Sleep(300 * time.Millisecond) // a duplicate, were it queued, would show by now
		if got := len(rec.list()) - before; got != 3 {
			t.Errorf("SQIBS got %d calls, want 3 (the redelivery dropped)", got)
		}
		h.mustQueue(payload(t, "build_finished_passed.json", 201, "passed", "main"))
		settle("resolve", before+4)
	})

	t.Run("automatically retried job that then passes opens nothing", func(t *testing.T) {
		before := len(rec.list())
		failed := fixtureMap(t, "job_finished_failed_retried.json")
		if code, body := h.send(marshal(t, failed), ""); code != 202 || !strings.Contains(body, "retried") {
			t.Errorf("retried failed job: %d %s, want 202 ignored", code, body)
		}
		h.mustQueue(marshal(t, fixtureMap(t, "job_finished_passed_auto_retry.json")))
		settle("the FIXED job", before+1)
		if got := rec.list()[before]; !strings.Contains(got, `"status":"FIXED"`) {
			t.Errorf("SQIBS got %s, want a FIXED", got)
		}
		if in := incidents(id + "#test"); len(in) != 0 {
			t.Errorf("incidents %+v, want none", in)
		}
	})

	t.Run("fork PR on main failing pages nothing", func(t *testing.T) {
		pr := fixtureMap(t, "build_finished_failed_fork_pr.json")
		if code, body := h.send(marshal(t, pr), ""); code != 202 || !strings.Contains(body, "pull-request") {
			t.Errorf("fork PR: %d %s, want 202 ignored", code, body)
		}
	})

	t.Run("a 400 KB branch and addresses in every name field stay out", func(t *testing.T) {
		m := fixtureMap(t, "build_finished_failed.json")
		b := m["build"].(map[string]any)
		b["branch"] = "main-" + strings.Repeat("x", 400<<10)
		b["author"] = map[string]any{"name": "jane@example.com", "username": "jane@example.com", "email": "jane@example.com"}
		m["pipeline"].(map[string]any)["name"] = "Deploy (owner jane@example.com)"
		body := marshal(t, m)
		h2 := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "rules-token", "ALERT_BRANCHES": "*"}, "rules-token")
		rec2 := &bodies{}
		h2.s.Sim.SetFault(rec2.hook)
		h2.mustQueue(body)
		h2.wait("the long-branch incident", func(s *sqibssim.Server) bool { return len(rec2.list()) == 1 && s.Calls() == 1 })
		got := rec2.list()[0]
		if strings.Contains(got, "@") {
			t.Errorf("an address reached SQIBS: %.300s", got)
		}
		if len(got) > 4<<10 {
			t.Errorf("SQIBS payload is %d bytes, want a bounded one", len(got))
		}
		for i, line := range strings.Split(h2.logs.String(), "\n") {
			if len(line) > 16<<10 {
				t.Errorf("log line %d is %d bytes, want ≤ 16 KB", i, len(line))
			}
			if strings.Contains(line, "@example.com") {
				t.Errorf("log line %d holds an address", i)
			}
		}
	})

	for _, line := range strings.Split(h.logs.String(), "\n") {
		if len(line) > 16<<10 {
			t.Errorf("log line of %d bytes, want ≤ 16 KB", len(line))
		}
	}
	if d := h.s.Queue.DeadLetters(); len(d) != 0 {
		t.Errorf("dead letters: %+v", d)
	}
}
