package state

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// base is an arbitrary instant the scenarios count from.
var base = time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)

func at(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }

var jobRules = func() incident.Rules {
	r := incident.LoadRules(config.NewReader(config.Map(map[string]string{"JOB_INCIDENTS": "true"})))
	return r
}()

// observe maps p with the rules and returns its state Event.
func observe(t *testing.T, r incident.Rules, p *buildkite.Payload) Event {
	t.Helper()
	pl, d, ok := r.Map(p, base)
	if !ok {
		t.Fatalf("fixture does not map: %s", d.Reason)
	}
	return Observe(p, pl.Event)
}

// build is build #n of the fixture's pipeline and branch: "failed" and
// "passed" are build.finished at minute m, "failing" is build.failing.
func build(t *testing.T, kind string, n int64, m int) Event {
	t.Helper()
	file := map[string]string{"failed": "build_finished_failed.json", "passed": "build_finished_passed.json", "failing": "build_failing.json"}[kind]
	p := testkit.Webhook(t, file)
	p.Build.Number = n
	p.Build.ID = fmt.Sprintf("build-%d", n)
	if kind == "failing" {
		p.Build.FailingAt = buildkite.Time{Time: at(m)}
	} else {
		p.Build.FinishedAt = buildkite.Time{Time: at(m)}
	}
	return observe(t, incident.DefaultRules(), p)
}

// rebuild is build #n, a rebuild of #of, finished at minute m.
func rebuild(t *testing.T, kind string, n, of int64, m int) Event {
	t.Helper()
	p := testkit.Webhook(t, "build_finished_"+kind+".json")
	p.Build.Number, p.Build.ID = n, fmt.Sprintf("build-%d", n)
	p.Build.RebuiltFrom = &buildkite.BuildRef{ID: fmt.Sprintf("build-%d", of), Number: of}
	p.Build.FinishedAt = buildkite.Time{Time: at(m)}
	return observe(t, incident.DefaultRules(), p)
}

// shard is job.finished of shard i of the fixture's step in build #n at
// minute m; i < 0 is a job of no parallel group, named name when given (a
// matrix job).
func shard(t *testing.T, failed bool, n int64, i int, name string, m int) Event {
	t.Helper()
	file := "job_finished_passed.json"
	if failed {
		file = "job_finished_failed.json"
	}
	p := testkit.Webhook(t, file)
	p.Build.Number, p.Build.ID = n, fmt.Sprintf("build-%d", n)
	p.Job.FinishedAt = buildkite.Time{Time: at(m)}
	if i >= 0 {
		p.Job.ParallelGroupIndex = &i
	}
	if name != "" {
		p.Job.Name, p.Job.Label = name, name
	}
	return observe(t, jobRules, p)
}

// retry is a retried job: same key as the job it retried, later time.
func retried(t *testing.T, failed bool, n int64, i int, m int) Event {
	t.Helper()
	ev := shard(t, failed, n, i, "", m)
	if !failed {
		ev.Status = incident.StatusFixed
	}
	return ev
}

// step is one event of a scenario and what must come of it.
type step struct {
	ev       Event
	clock    time.Duration // the dispatcher's clock, from base; 0 = the event's own time
	send     bool
	reason   string
	resolved bool
	recovery time.Duration
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name       string
		alertAfter int
		steps      func(t *testing.T) []step
	}{
		{"failed opens, passed resolves with the recovery time", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 10, 0), send: true},
				{ev: build(t, "passed", 11, 30), send: true, resolved: true, recovery: 30 * time.Minute},
			}
		}},
		{"#11 passes then #10 fails: nothing opens", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "passed", 11, 5), send: true}, // no state yet: sent as without state
				{ev: build(t, "failed", 10, 6), reason: ReasonStale},
			}
		}},
		{"late build.failing of #12 after #13 passed", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 11, 0), send: true},
				{ev: build(t, "passed", 13, 10), send: true, resolved: true, recovery: 10 * time.Minute},
				{ev: build(t, "failing", 12, 4), reason: ReasonStale},
			}
		}},
		{"build.failing and build.finished of one build count as one failed build", 2, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failing", 20, 1), reason: ReasonBelowThreshold},
				{ev: build(t, "failed", 20, 2), reason: ReasonBelowThreshold}, // same build: still 1
				{ev: build(t, "failed", 21, 3), send: true},
				{ev: build(t, "failing", 21, 1), reason: ReasonStale}, // its own build.failing, late
			}
		}},
		{"rebuild of an old build passes while the newest fails: stays open", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 13, 0), send: true},
				{ev: rebuild(t, "passed", 14, 10, 5), reason: ReasonStale},
				{ev: build(t, "failed", 15, 6), send: true}, // still open: each newer failure is sent
			}
		}},
		{"rebuild of the failing build passes: resolves", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 13, 0), send: true},
				{ev: rebuild(t, "passed", 14, 13, 20), send: true, resolved: true, recovery: 20 * time.Minute},
			}
		}},
		// rebuilt_from names the build rebuilt, itself perhaps a rebuild:
		// the chain orders as its original, #10, so #11, a newer commit
		// failing after it, is a real failure and pages.
		{"rebuild of a rebuild orders as the original build", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 10, 0), send: true},
				{ev: rebuild(t, "failed", 12, 10, 2), send: true},                                            // ordered #10
				{ev: rebuild(t, "passed", 13, 12, 4), send: true, resolved: true, recovery: 4 * time.Minute}, // #12's chain: #10
				{ev: build(t, "failed", 11, 5), send: true},                                                  // newer commit: pages
			}
		}},
		{"ALERT_AFTER_FAILURES=2: fail, pass, fail, fail", 2, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 1, 0), reason: ReasonBelowThreshold},
				{ev: build(t, "passed", 2, 1), reason: ReasonNotOpen}, // resets the count
				{ev: build(t, "failed", 3, 2), reason: ReasonBelowThreshold},
				{ev: build(t, "failed", 4, 3), send: true},
				{ev: build(t, "failed", 5, 4), send: true},
				{ev: build(t, "passed", 6, 12), send: true, resolved: true, recovery: 10 * time.Minute}, // from #3
			}
		}},
		{"a pass after a pass sends nothing", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "passed", 1, 0), send: true},
				{ev: build(t, "passed", 2, 1), reason: ReasonNotOpen},
			}
		}},
		{"the same event three times", 1, func(t *testing.T) []step {
			ev := build(t, "failed", 7, 0)
			return []step{
				{ev: ev, send: true},
				{ev: ev, reason: ReasonDuplicate},
				{ev: ev, reason: ReasonDuplicate},
			}
		}},
		{"a redelivery after SQS's 5-minute window", 1, func(t *testing.T) []step {
			ev := build(t, "failed", 7, 0)
			return []step{
				{ev: ev, clock: time.Minute, send: true},
				{ev: ev, clock: 7 * time.Minute, reason: ReasonDuplicate},
				{ev: ev, clock: 24 * time.Hour, reason: ReasonDuplicate},
			}
		}},
		{"an item past its expiry counts as none", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 7, 0), send: true},
				// 91 days later DynamoDB may not have deleted it yet.
				{ev: build(t, "failed", 6, 1), clock: TTL + 24*time.Hour, send: true},
			}
		}},
		{"a build that fails, passes on a retried job, and fails again", 1, func(t *testing.T) []step {
			return []step{
				{ev: build(t, "failed", 30, 0), send: true},
				{ev: build(t, "passed", 30, 3), send: true, resolved: true, recovery: 3 * time.Minute},
				{ev: build(t, "failed", 30, 4), send: true}, // newer time: a true re-failure
			}
		}},
		{"shards 0 and 1 fail, then pass in order 0, 1", 1, func(t *testing.T) []step {
			return []step{
				{ev: shard(t, true, 40, 0, "", 0), send: true},
				{ev: shard(t, true, 40, 1, "", 1), send: true},
				{ev: shard(t, false, 41, 0, "", 5), reason: ReasonJobsFailing},
				{ev: shard(t, false, 41, 1, "", 6), send: true, resolved: true, recovery: 6 * time.Minute},
			}
		}},
		{"shards 0 and 1 fail, then pass in order 1, 0", 1, func(t *testing.T) []step {
			return []step{
				{ev: shard(t, true, 40, 0, "", 0), send: true},
				{ev: shard(t, true, 40, 1, "", 1), send: true},
				{ev: shard(t, false, 41, 1, "", 5), reason: ReasonJobsFailing},
				{ev: shard(t, false, 41, 0, "", 6), send: true, resolved: true, recovery: 6 * time.Minute},
			}
		}},
		{"a shard's late failure is not dropped because its sibling finished later", 1, func(t *testing.T) []step {
			return []step{
				{ev: shard(t, false, 50, 1, "", 9), send: true}, // no state: sent as without
				{ev: shard(t, true, 50, 0, "", 3), send: true},
				{ev: shard(t, false, 50, 1, "", 9), reason: ReasonDuplicate},
			}
		}},
		{"a failed shard retried and passed leaves the set", 1, func(t *testing.T) []step {
			return []step{
				{ev: shard(t, true, 60, 0, "", 0), send: true},
				{ev: shard(t, false, 60, 1, "", 1), reason: ReasonJobsFailing},
				{ev: retried(t, false, 60, 0, 4), send: true, resolved: true, recovery: 4 * time.Minute},
				{ev: shard(t, true, 60, 0, "", 0), reason: ReasonStale}, // the retried run, redelivered
			}
		}},
		{"matrix jobs of one step share its incident", 1, func(t *testing.T) []step {
			return []step{
				{ev: shard(t, true, 70, -1, "test linux", 0), send: true},
				{ev: shard(t, true, 70, -1, "test macos", 1), send: true},
				{ev: shard(t, false, 71, -1, "test linux", 5), reason: ReasonJobsFailing},
				{ev: shard(t, false, 71, -1, "test macos", 6), send: true, resolved: true, recovery: 6 * time.Minute},
			}
		}},
		{"a job two builds old no longer counts", 1, func(t *testing.T) []step {
			return []step{
				{ev: shard(t, true, 80, 2, "", 0), send: true}, // shard 2 of 3
				// parallelism lowered to 2: shard 2 never reports again
				{ev: shard(t, false, 81, 0, "", 5), reason: ReasonJobsFailing},
				{ev: shard(t, false, 82, 0, "", 9), send: true, resolved: true, recovery: 9 * time.Minute},
				{ev: shard(t, true, 80, 1, "", 1), reason: ReasonStale}, // below the floor
			}
		}},
		{"ALERT_AFTER_FAILURES does not hold back step incidents", 3, func(t *testing.T) []step {
			return []step{{ev: shard(t, true, 90, 0, "", 0), send: true}}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var item *Item
			for i, s := range tc.steps(t) {
				now := s.ev.Order.At.Add(time.Second)
				if s.clock != 0 {
					now = base.Add(s.clock)
				}
				v := Decide(item, s.ev, Settings{AlertAfter: tc.alertAfter}, now)
				what := fmt.Sprintf("step %d (%s #%d %s)", i+1, s.ev.Status, s.ev.Order.Build, s.ev.Job)
				if v.Send != s.send || v.Reason != s.reason {
					t.Fatalf("%s: send=%v reason=%q; want send=%v reason=%q", what, v.Send, v.Reason, s.send, s.reason)
				}
				if v.Resolved != s.resolved || v.Recovery != s.recovery {
					t.Errorf("%s: resolved=%v recovery=%s; want %v %s", what, v.Resolved, v.Recovery, s.resolved, s.recovery)
				}
				if v.Send && v.Reason != "" {
					t.Errorf("%s: sent with reason %q", what, v.Reason)
				}
				if s.reason == ReasonStale || s.reason == ReasonDuplicate {
					if v.Next != nil {
						t.Errorf("%s: a %s event wrote %+v", what, s.reason, v.Next)
					}
					continue
				}
				if v.Next == nil {
					t.Fatalf("%s: no item to write", what)
				}
				// As a store would: the written item comes back one version on.
				n := *v.Next
				n.Version++
				item = &n
			}
		})
	}
}

func TestDecideItem(t *testing.T) {
	now := at(1)
	v := Decide(nil, build(t, "failed", 10, 0), Settings{AlertAfter: 1}, now)
	if !v.Opened || !v.Send {
		t.Fatalf("first failure: %+v", v)
	}
	it := v.Next
	if it.ID != "acme/deploy-api/main" || !it.Open || it.Failures != 1 || !it.OpenedAt.Equal(at(0)) || !it.FirstFailure.Equal(at(0)) {
		t.Errorf("item after the first failure: %+v", it)
	}
	if it.Order != (Order{Build: 10, At: at(0)}) || it.LastStatus != incident.StatusFailed || it.Pipeline != "deploy-api" || it.Branch != "main" || it.Step != "" {
		t.Errorf("item order/last: %+v", it)
	}
	if it.LastURL != "https://buildkite.com/acme/deploy-api/builds/1234" { // the fixture's web_url
		t.Errorf("last URL %q", it.LastURL)
	}
	if !it.UpdatedAt.Equal(now) || !it.ExpiresAt.Equal(now.Add(TTL)) {
		t.Errorf("updated %s expires %s; want %s and 90 days later", it.UpdatedAt, it.ExpiresAt, now)
	}
	it.Version = 1
	v = Decide(it, build(t, "failed", 11, 2), Settings{AlertAfter: 1}, now)
	if v.Opened || !v.Send || v.Next.Failures != 2 || !v.Next.OpenedAt.Equal(at(0)) || v.Next.Version != 1 {
		t.Errorf("second failure: %+v %+v", v, v.Next)
	}
	if it.Failures != 1 {
		t.Error("Decide changed the item it was given")
	}
	// LastStatus is what was last sent: a held-back failure leaves it.
	if n := Decide(nil, build(t, "failed", 10, 0), Settings{AlertAfter: 2}, now).Next; n.LastStatus != "" || n.LastURL == "" {
		t.Errorf("below the threshold: last status %q, URL %q; want none sent, the URL kept", n.LastStatus, n.LastURL)
	}
	// A step item's jobs are copied, not shared.
	s := Decide(nil, shard(t, true, 1, 0, "", 0), Settings{}, now).Next
	s.Version = 1
	Decide(s, shard(t, false, 1, 1, "", 1), Settings{}, now)
	if len(s.Jobs) != 1 {
		t.Errorf("Decide changed the jobs of the item it was given: %v", s.Jobs)
	}
	if got := s.FailingJobs(); !slices.Equal(got, []string{":go: test/0"}) || s.Step != "test" || s.Branch != "main" {
		t.Errorf("failing jobs %q, step %q, branch %q", got, s.Step, s.Branch)
	}
}

func TestObserve(t *testing.T) {
	ev := build(t, "failed", 1234, 0)
	want := Event{
		ID: "acme/deploy-api/main", Failed: true, Status: incident.StatusFailed,
		Order: Order{Build: 1234, At: at(0)}, Number: 1234, BuildID: "build-1234",
		URL: "https://buildkite.com/acme/deploy-api/builds/1234", Pipeline: "deploy-api", Branch: "main",
		AliasKey: "alias:018f0c3e-8b2a-4d41-9f3c-2a6e5d7b1c90/main",
	}
	if ev != want {
		t.Errorf("build event\n got %+v\nwant %+v", ev, want)
	}
	if ev := rebuild(t, "passed", 20, 12, 0); ev.Order.Build != 12 || ev.Failed || ev.BuildID != "build-20" {
		t.Errorf("rebuild: %+v; want ordered as #12", ev)
	}
	j := shard(t, true, 5, 3, "", 0)
	if !j.Step || j.Job != ":go: test/3" || j.StepName != "test" || j.ID != "acme/deploy-api/main#test" || j.AliasKey != "alias:018f0c3e-8b2a-4d41-9f3c-2a6e5d7b1c90/main#test" {
		t.Errorf("shard: %+v", j)
	}
	if m := shard(t, false, 5, -1, "test linux", 0); m.Job != "test linux" {
		t.Errorf("matrix job key %q", m.Job)
	}
	p := testkit.Webhook(t, "build_finished_failed.json")
	p.Pipeline.ID = ""
	if ev := observe(t, incident.DefaultRules(), p); ev.AliasKey != "" {
		t.Errorf("no pipeline id, alias key %q", ev.AliasKey)
	}
}

func TestOrderCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b Order
		want int
	}{
		{Order{1, at(5)}, Order{2, at(0)}, -1}, // the build number first
		{Order{2, at(0)}, Order{1, at(5)}, 1},
		{Order{2, at(0)}, Order{2, at(1)}, -1},
		{Order{2, at(1)}, Order{2, at(1)}, 0},
	} {
		if got := tc.a.Compare(tc.b); got != tc.want {
			t.Errorf("%v.Compare(%v) = %d; want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
