package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// store is the in-process store with its calls counted and faults to
// inject, each returned once.
type store struct {
	*memstate.Store
	mu         sync.Mutex
	gets, puts int
	getErr     error
	putErr     error
	putStall   bool            // the next Put hangs until its context ends, as a throttled table does
	corrupt    map[string]bool // read back as unreadable until rewritten
}

func newStore() *store { return &store{Store: memstate.New(), corrupt: map[string]bool{}} }

func (s *store) Get(ctx context.Context, id string) (*state.Item, error) {
	s.mu.Lock()
	s.gets++
	err, corrupt := s.getErr, s.corrupt[id]
	s.getErr = nil
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	it, err := s.Store.Get(ctx, id)
	if corrupt && it != nil {
		return &state.Item{ID: id, Version: it.Version}, fmt.Errorf("%w: %s: bad attribute", state.ErrCorrupt, id)
	}
	return it, err
}

func (s *store) Put(ctx context.Context, it *state.Item) error {
	s.mu.Lock()
	s.puts++
	err, stall := s.putErr, s.putStall
	s.putErr, s.putStall = nil, false
	if err == nil && !stall {
		delete(s.corrupt, it.ID)
	}
	s.mu.Unlock()
	if stall {
		<-ctx.Done()
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	return s.Store.Put(ctx, it)
}

func (s *store) calls() (gets, puts int) { s.mu.Lock(); defer s.mu.Unlock(); return s.gets, s.puts }

func (s *store) item(t *testing.T, id string) *state.Item {
	t.Helper()
	it, err := s.Store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// stateRig is a rig whose handler keeps state in st.
func stateRig(t *testing.T, alertAfter int, answer func(int, incident.Event, *http.Request) int) (*rig, *store) {
	t.Helper()
	r := newRig(t, answer, 0)
	st := newStore()
	r.h.cfg.State = st
	r.h.cfg.Rules.AlertAfterFailures = alertAfter
	return r, st
}

// deliver hands one record to the handler; true when it was not reported
// failed.
func (r *rig) deliver(t *testing.T, rec events.SQSMessage) bool {
	t.Helper()
	resp, err := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{rec}})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.BatchItemFailures) == 0
}

func (r *rig) sent() []string {
	var out []string
	for _, e := range r.srv.events() {
		out = append(out, fmt.Sprintf("%s %s #%d", e.ID, e.Status, e.BuildNumber))
	}
	return out
}

const mainID = "acme/deploy-api/main"

func TestGuardSendsWhatTheStateAllows(t *testing.T) {
	r, st := stateRig(t, 1, nil)
	for i, rec := range []events.SQSMessage{
		record(t, "m1", "build_finished_failed.json", onBranch("main", 11, "failed")),
		record(t, "m2", "build_finished_passed.json", onBranch("main", 13, "passed")),
		record(t, "m3", "build_finished_failed.json", onBranch("main", 12, "failed")), // older than #13
		record(t, "m4", "build_finished_passed.json", onBranch("main", 14, "passed")), // a pass after a pass
	} {
		if !r.deliver(t, rec) {
			t.Fatalf("record %d reported failed:\n%s", i+1, r.logs.String())
		}
	}
	if got, want := r.sent(), []string{mainID + " FAILED #11", mainID + " PASSED #13"}; !slices.Equal(got, want) {
		t.Errorf("SQIBS got %v; want %v", got, want)
	}
	logs := r.logs.String()
	for _, s := range []string{`"reason":"stale"`, `"reason":"not_open"`} {
		if !strings.Contains(logs, s) {
			t.Errorf("no %s in the logs:\n%s", s, logs)
		}
	}
	if !strings.Contains(r.emf.String(), `"stale":1`) {
		t.Errorf("no stale metric:\n%s", r.emf.String())
	}
	// The pass after a pass is held back, and counted so.
	if !strings.Contains(r.emf.String(), `"held_back":1`) {
		t.Errorf("no held_back metric:\n%s", r.emf.String())
	}
	if it := st.item(t, mainID); it.Open || it.Order.Build != 14 || it.Version != 3 {
		t.Errorf("state %+v; want closed at #14, version 3 (a write per event but the stale one)", it)
	}
	// One read per event and one conditional write per event applied; the
	// first event of the id also looked for an alias, and the trigger that
	// opened the incident wrote it.
	if gets, puts := st.calls(); gets != 4+1 || puts != 3+1 {
		t.Errorf("%d reads and %d writes for 4 events; want 5 and 4", gets, puts)
	}
	// The resolve carried the recovery time, per pipeline: the passed
	// fixture finished 10 minutes after the failed one.
	if !strings.Contains(r.emf.String(), `"Pipeline":"deploy-api","time_to_recovery_s":600`) {
		t.Errorf("no time_to_recovery_s for deploy-api:\n%s", r.emf.String())
	}
}

func TestGuardRecoveryMetric(t *testing.T) {
	r, _ := stateRig(t, 1, nil)
	failed := record(t, "m1", "build_finished_failed.json", func(p *buildkite.Payload) {
		onBranch("main", 20, "failed")(p)
		p.Build.FinishedAt = buildkite.Time{Time: t0.Add(-90 * time.Second)}
	})
	for _, rec := range []events.SQSMessage{failed, record(t, "m2", "build_finished_passed.json", onBranch("main", 21, "passed"))} {
		if !r.deliver(t, rec) {
			t.Fatal(r.logs.String())
		}
	}
	// The passed fixture finished at 12:10:00, 597 s after t0; the failure 90 s before t0.
	if !strings.Contains(r.emf.String(), `"Dimensions":[["Service","FunctionName","Pipeline"]]`) ||
		!strings.Contains(r.emf.String(), `"Pipeline":"deploy-api","time_to_recovery_s":687`) {
		t.Errorf("want time_to_recovery_s 687 for deploy-api:\n%s", r.emf.String())
	}
}

func TestGuardAlertAfterFailures(t *testing.T) {
	r, st := stateRig(t, 2, nil)
	for i, rec := range []events.SQSMessage{
		record(t, "m1", "build_finished_failed.json", onBranch("main", 1, "failed")),
		record(t, "m2", "build_finished_passed.json", onBranch("main", 2, "passed")),
		record(t, "m3", "build_finished_failed.json", onBranch("main", 3, "failed")),
		record(t, "m4", "build_finished_failed.json", onBranch("main", 4, "failed")),
	} {
		if !r.deliver(t, rec) {
			t.Fatalf("record %d reported failed", i+1)
		}
	}
	if got, want := r.sent(), []string{mainID + " FAILED #4"}; !slices.Equal(got, want) {
		t.Errorf("SQIBS got %v; want %v", got, want)
	}
	if !strings.Contains(r.logs.String(), `"reason":"below_threshold"`) {
		t.Errorf("below-threshold failures not logged:\n%s", r.logs.String())
	}
	if it := st.item(t, mainID); !it.Open || it.Failures != 2 {
		t.Errorf("state %+v; want open after 2 failures", it)
	}
}

// The state is written only once SQIBS took the event: a failed send is
// retried against the state as it was, not dropped as a duplicate.
func TestGuardWritesAfterTheSend(t *testing.T) {
	fail := true
	r, st := stateRig(t, 1, func(int, incident.Event, *http.Request) int {
		if fail {
			return 500
		}
		return 201
	})
	rec := record(t, "m1", "build_finished_failed.json", nil)
	if r.deliver(t, rec) {
		t.Fatal("a 500 was not reported failed")
	}
	if it := st.item(t, mainID); it != nil {
		t.Fatalf("state written before the send succeeded: %+v", it)
	}
	fail = false
	if !r.deliver(t, rec) {
		t.Fatal("the retry was reported failed")
	}
	// The same event three times: sent once more (the 500) and then dropped.
	r.deliver(t, rec)
	r.deliver(t, rec)
	if got := r.sent(); len(got) != 2 {
		t.Errorf("SQIBS got %v; want the failed attempt and its retry only", got)
	}
	if !strings.Contains(r.logs.String(), `"reason":"duplicate"`) {
		t.Errorf("duplicates not logged:\n%s", r.logs.String())
	}
}

// A redelivery after SQS's 5-minute deduplication window is still caught.
func TestGuardRedeliveryAfterTheDedupWindow(t *testing.T) {
	r, _ := stateRig(t, 1, nil)
	clock := testkit.NewClock(t0)
	r.h.now = clock.Now
	rec := record(t, "m1", "build_finished_failed.json", nil)
	r.deliver(t, rec)
	clock.Advance(6 * time.Minute)
	again := record(t, "m2", "build_finished_failed.json", nil) // a new SQS message: SQS no longer knew it
	r.deliver(t, again)
	if got := r.sent(); len(got) != 1 {
		t.Errorf("SQIBS got %v; want the event once", got)
	}
}

func TestGuardStateErrorsAreTransient(t *testing.T) {
	for _, tc := range []struct {
		name      string
		getErr    error
		putErr    error
		sentFirst int // SQIBS calls on the first delivery
	}{
		{"read fails: nothing sent", errors.New("dynamodb: throttled"), nil, 0},
		{"write fails after the send", nil, errors.New("dynamodb: 500"), 1},
		{"write loses a race", nil, fmt.Errorf("%w: %s", state.ErrConflict, mainID), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, st := stateRig(t, 1, nil)
			st.getErr, st.putErr = tc.getErr, tc.putErr
			rec := record(t, "m1", "build_finished_failed.json", nil)
			if r.deliver(t, rec) {
				t.Fatal("not reported failed: the event would be lost")
			}
			if n := len(r.srv.events()); n != tc.sentFirst {
				t.Errorf("%d SQIBS calls; want %d", n, tc.sentFirst)
			}
			if !strings.Contains(r.logs.String(), "incident state unavailable: will retry") {
				t.Errorf("no retry logged:\n%s", r.logs.String())
			}
			if len(r.vis.calls) != 1 || r.vis.calls[0].timeout != 2*time.Second {
				t.Errorf("visibility %v; want the backoff of a first receive", r.vis.calls)
			}
			// The retry goes through, sending again (SQIBS dedupes) when the
			// first send's write was lost.
			if !r.deliver(t, rec) {
				t.Fatal("the retry was reported failed")
			}
			if n := len(r.srv.events()); n != tc.sentFirst+1 {
				t.Errorf("%d SQIBS calls after the retry; want %d", n, tc.sentFirst+1)
			}
			if it := st.item(t, mainID); it == nil || !it.Open {
				t.Errorf("state after the retry: %+v", it)
			}
		})
	}
}

func TestGuardCorruptItemCountsAsAbsent(t *testing.T) {
	r, st := stateRig(t, 1, nil)
	r.deliver(t, record(t, "m1", "build_finished_failed.json", onBranch("main", 5, "failed")))
	st.corrupt[mainID] = true
	// An older build: with the item readable it would be stale.
	if !r.deliver(t, record(t, "m2", "build_finished_passed.json", onBranch("main", 4, "passed"))) {
		t.Fatal(r.logs.String())
	}
	r.deliver(t, record(t, "m3", "build_finished_passed.json", onBranch("main", 6, "passed")))
	if got, want := r.sent(), []string{mainID + " FAILED #5", mainID + " PASSED #4"}; !slices.Equal(got, want) {
		t.Errorf("SQIBS got %v; want %v", got, want)
	}
	if n := strings.Count(r.logs.String(), "incident state unreadable"); n != 1 {
		t.Errorf("the corrupt item was logged %d times; want once", n)
	}
	if it := st.item(t, mainID); it.Order.Build != 6 || it.Version != 3 {
		t.Errorf("state %+v; want replaced and moved on to #6", it)
	}
}

// A pipeline renamed while red: the renamed pipeline's pass resolves the
// incident its old slug opened; its next failure opens one under the new
// slug.
func TestGuardRenamedPipeline(t *testing.T) {
	r, st := stateRig(t, 1, nil)
	renamed := func(n int64, state string) func(*buildkite.Payload) {
		return func(p *buildkite.Payload) {
			onBranch("main", n, state)(p)
			p.Pipeline.Slug = "deploy-service" // same pipeline.id
		}
	}
	for _, rec := range []events.SQSMessage{
		record(t, "m1", "build_finished_failed.json", onBranch("main", 10, "failed")),
		record(t, "m2", "build_finished_failed.json", renamed(11, "failed")),
		record(t, "m3", "build_finished_passed.json", renamed(12, "passed")),
		record(t, "m4", "build_finished_failed.json", renamed(13, "failed")),
		record(t, "m5", "build_finished_passed.json", renamed(14, "passed")),
	} {
		if !r.deliver(t, rec) {
			t.Fatal(r.logs.String())
		}
	}
	const newID = "acme/deploy-service/main"
	want := []string{mainID + " FAILED #10", mainID + " FAILED #11", mainID + " PASSED #12", newID + " FAILED #13", newID + " PASSED #14"}
	if got := r.sent(); !slices.Equal(got, want) {
		t.Errorf("SQIBS got\n%v\nwant\n%v", got, want)
	}
	al := st.item(t, "alias:018f0c3e-8b2a-4d41-9f3c-2a6e5d7b1c90/main")
	if al == nil || al.AliasOf != newID {
		t.Errorf("alias %+v; want it to point at the incident the new slug opened", al)
	}
	if !strings.Contains(r.logs.String(), "pipeline renamed while its incident is open") {
		t.Errorf("the rename was not logged:\n%s", r.logs.String())
	}
}

func TestGuardStepIncidents(t *testing.T) {
	r, _ := stateRig(t, 1, nil)
	r.h.cfg.Rules.JobIncidents = true
	job := func(id string, failed bool, shard, minute int) events.SQSMessage {
		file := "job_finished_passed.json"
		if failed {
			file = "job_finished_failed.json"
		}
		return record(t, id, file, func(p *buildkite.Payload) {
			p.Job.ParallelGroupIndex = &shard
			p.Job.FinishedAt = buildkite.Time{Time: t0.Add(time.Duration(minute) * time.Minute)}
		})
	}
	for _, rec := range []events.SQSMessage{job("m1", true, 0, 0), job("m2", true, 1, 1), job("m3", false, 1, 2), job("m4", false, 0, 3)} {
		r.deliver(t, rec)
	}
	const id = mainID + "#test"
	want := []string{id + " FAILED #1234", id + " FAILED #1234", id + " PASSED #1234"}
	if got := r.sent(); !slices.Equal(got, want) {
		t.Errorf("SQIBS got %v; want %v (shard 1's pass held back while shard 0 fails)", got, want)
	}
	if !strings.Contains(r.logs.String(), `"reason":"jobs_failing"`) {
		t.Errorf("held-back pass not logged:\n%s", r.logs.String())
	}
}

func TestNoStateSaysSoOnce(t *testing.T) {
	r := newRig(t, nil, 0)
	if n := strings.Count(r.logs.String(), "STATE_TABLE is not set"); n != 1 {
		t.Errorf("logged %d times; want once at start:\n%s", n, r.logs.String())
	}
	r.deliver(t, record(t, "m1", "build_finished_passed.json", nil))
	r.deliver(t, record(t, "m2", "build_finished_passed.json", onBranch("main", 1235, "passed")))
	if n := len(r.srv.events()); n != 2 {
		t.Errorf("without state %d calls; want every event sent", n)
	}
	if n := strings.Count(r.logs.String(), "STATE_TABLE is not set"); n != 1 {
		t.Errorf("logged %d times after deliveries; want once", n)
	}
}

// The alias item is written when an incident first opens, and again only
// once it is half way to its expiry: reopening costs no extra write.
func TestGuardAliasWrittenOnce(t *testing.T) {
	r, st := stateRig(t, 1, nil)
	clock := testkit.NewClock(t0)
	r.h.now = clock.Now
	for i, outcome := range []string{"failed", "passed", "failed", "passed"} {
		r.deliver(t, record(t, fmt.Sprintf("m%d", i), "build_finished_"+outcome+".json", onBranch("main", int64(10+i), outcome)))
	}
	if gets, puts := st.calls(); gets != 4+1 || puts != 4+1 {
		t.Errorf("%d reads and %d writes for 4 events; want 5 and 5: the alias read and written once", gets, puts)
	}
	clock.Advance(46 * 24 * time.Hour)
	r.deliver(t, record(t, "m5", "build_finished_failed.json", onBranch("main", 20, "failed")))
	if _, puts := st.calls(); puts != 5+2 {
		t.Errorf("%d writes; want the alias rewritten half way to its expiry", puts)
	}
	if al := st.item(t, "alias:018f0c3e-8b2a-4d41-9f3c-2a6e5d7b1c90/main"); !al.ExpiresAt.Equal(clock.Now().Add(state.TTL).Truncate(time.Second)) {
		t.Errorf("alias expires %s", al.ExpiresAt)
	}
}

// A state write that times out after the send, past RETRY_FOR, still ends
// in the DLQ: the dead-letter send gets the invocation's time, not the
// write's spent one (else it failed at once and the event, already in
// SQIBS, was sent again on every receive until the redrive net).
func TestGuardWriteTimeoutPastRetryFor(t *testing.T) {
	clk := testkit.NewClock(time.Date(2024, 8, 6, 12, 0, 0, 0, time.UTC))
	r, st := stateRig(t, 1, nil)
	r.h.now = clk.Now
	st.putStall = true
	rec := sentAgo(record(t, "m1", "build_finished_failed.json", nil), clk.Now(), 25*time.Hour)
	if !r.deliver(t, rec) {
		t.Errorf("reported failed; want dead-lettered (done with):\n%s", r.logs.String())
	}
	if len(r.srv.events()) != 1 {
		t.Errorf("%d SQIBS calls, want the one before the write", len(r.srv.events()))
	}
	if len(r.dlq.calls) != 1 || r.dlq.calls[0].reason != ReasonRetryWindowExceeded {
		t.Errorf("dead letters %v; want one %s", r.dlq.calls, ReasonRetryWindowExceeded)
	}
	if strings.Contains(r.logs.String(), "dead-letter send failed") {
		t.Errorf("the dead-letter send failed:\n%s", r.logs.String())
	}
}

// The incident state down for longer than RETRY_FOR ends in the DLQ like
// an SQIBS outage does, never sent without its guard and never left to the
// redrive net.
func TestGuardStateOutagePastRetryFor(t *testing.T) {
	clk := testkit.NewClock(time.Date(2024, 8, 6, 12, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name    string
		age     time.Duration
		wantDLQ bool
	}{
		{"young: retried", time.Hour, false},
		{"older than RETRY_FOR: dead-lettered", 25 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, st := stateRig(t, 1, nil)
			r.h.now = clk.Now
			st.getErr = errors.New("dynamodb: throttled")
			rec := sentAgo(record(t, "m1", "build_finished_failed.json", nil), clk.Now(), tc.age)
			delivered := r.deliver(t, rec)
			if len(r.srv.events()) != 0 {
				t.Error("sent without its guard")
			}
			if got := len(r.dlq.calls) == 1 && r.dlq.calls[0].reason == ReasonRetryWindowExceeded; got != tc.wantDLQ {
				t.Errorf("dead letters %v; want dead-lettered %v", r.dlq.calls, tc.wantDLQ)
			}
			if delivered != tc.wantDLQ { // dead-lettered = done with; else reported failed for a retry
				t.Errorf("reported done %v; want %v", delivered, tc.wantDLQ)
			}
			if tc.wantDLQ && !strings.Contains(r.logs.String(), "incident state unavailable for longer than RETRY_FOR") {
				t.Errorf("no ERROR line naming the state:\n%s", r.logs.String())
			}
		})
	}
}
