package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

const sqibsToken = "sqibs-token-abcdef-123456"

var t0 = time.Date(2024, 8, 5, 12, 0, 3, 0, time.UTC)

// record builds an SQS record carrying the envelope of a fixture.
func record(t testing.TB, id, fixture string, mutate func(*buildkite.Payload)) events.SQSMessage {
	t.Helper()
	p := testkit.Webhook(t, fixture)
	if mutate != nil {
		mutate(p)
	}
	d := incident.DefaultRules().Classify(p)
	m, err := queue.NewMessage(p, d.ID, "req-"+id, t0)
	if err != nil {
		t.Fatal(err)
	}
	return raw(id, d.ID, string(m.Body))
}

func raw(id, group, body string) events.SQSMessage {
	return events.SQSMessage{
		MessageId:      id,
		ReceiptHandle:  "rh-" + id,
		Body:           body,
		EventSourceARN: "arn:aws:sqs:us-east-1:123456789012:bridge.fifo",
		Attributes:     map[string]string{"MessageGroupId": group, "ApproximateReceiveCount": "1"},
	}
}

func onBranch(branch string, number int64, state string) func(*buildkite.Payload) {
	return func(p *buildkite.Payload) {
		p.Build.Branch = branch
		p.Build.Number = number
		p.Build.State = state
		p.Build.ID = fmt.Sprintf("build-%s-%d", branch, number)
	}
}

// sqibsServer is an httptest SQIBS whose answer per call is scripted.
type sqibsServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []incident.Event
	answer func(n int, ev incident.Event, r *http.Request) int
}

func newSQIBS(t *testing.T, answer func(n int, ev incident.Event, r *http.Request) int) *sqibsServer {
	s := &sqibsServer{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var pl incident.Payload
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &pl); err != nil {
			t.Errorf("SQIBS got a body that is not the incident payload: %v", err)
		}
		s.mu.Lock()
		n := len(s.calls)
		s.calls = append(s.calls, pl.Event)
		s.mu.Unlock()
		code := 201
		if s.answer != nil {
			code = s.answer(n, pl.Event, r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"id":"api-%d","triggered":{"duplicate":false,"created":%v},"resolved":{"duplicate":false,"resolved":false}}`, n, code == 201)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sqibsServer) events() []incident.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

type tokens struct {
	mu        sync.Mutex
	v         string
	refreshed int
	next      string
}

func (k *tokens) Get(context.Context) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.v, nil
}
func (k *tokens) Refresh(context.Context) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refreshed++
	if k.next != "" {
		k.v = k.next
	}
	return k.v, nil
}

type visCall struct {
	handle  string
	timeout time.Duration
}

type fakeVis struct {
	mu    sync.Mutex
	calls []visCall
	stall bool // block until ctx ends, as a stalled SQS call would
}

func (f *fakeVis) SetVisibility(ctx context.Context, arn, handle string, d time.Duration) error {
	if f.stall {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, visCall{handle, d})
	return nil
}

type dlqCall struct{ id, reason string }

type fakeDLQ struct {
	mu    sync.Mutex
	calls []dlqCall
	err   error
	stall bool
}

func (f *fakeDLQ) DeadLetter(ctx context.Context, m events.SQSMessage, reason string) error {
	if f.stall {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil { // as SQS's client: no send on a spent context
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, dlqCall{m.MessageId, reason})
	return nil
}

type rig struct {
	h    *Handler
	srv  *sqibsServer
	vis  *fakeVis
	dlq  *fakeDLQ
	tok  *tokens
	logs *testkit.Buffer
	emf  *testkit.Buffer
}

func newRig(t *testing.T, answer func(int, incident.Event, *http.Request) int, timeout time.Duration) *rig {
	t.Helper()
	srv := newSQIBS(t, answer)
	tok := &tokens{v: sqibsToken}
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	c, err := sqibs.New(sqibs.Config{URL: srv.URL + "/v1/process", Auth: "header", From: "Buildkite", Timeout: timeout}, tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{srv: srv, vis: &fakeVis{}, dlq: &fakeDLQ{}, tok: tok, logs: &testkit.Buffer{}, emf: &testkit.Buffer{}}
	log := slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.h = New(Config{Rules: incident.DefaultRules()}, c, r.vis, r.dlq, log, metrics.New(r.emf, "dispatcher-test"))
	r.h.jitter = func() float64 { return 0.5 } // no jitter: exact backoff
	return r
}

func failedIDs(resp events.SQSEventResponse) []string {
	var out []string
	for _, f := range resp.BatchItemFailures {
		out = append(out, f.ItemIdentifier)
	}
	slices.Sort(out)
	return out
}

func TestResponseClasses(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		wantFailed bool
		wantDLQ    string
		metric     string
	}{
		{"200 resolved", 200, false, "", metrics.Delivered},
		{"201 created", 201, false, "", metrics.Delivered},
		{"202 no filter", 202, false, "", metrics.Delivered},
		{"400 permanent", 400, false, ReasonRejected, metrics.PermanentFailure},
		{"404 permanent", 404, false, ReasonRejected, metrics.PermanentFailure},
		{"422 permanent", 422, false, ReasonRejected, metrics.PermanentFailure},
		{"429 transient", 429, true, "", metrics.TransientFailure},
		{"500 transient", 500, true, "", metrics.TransientFailure},
		{"502 transient", 502, true, "", metrics.TransientFailure},
		{"503 transient", 503, true, "", metrics.TransientFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(int, incident.Event, *http.Request) int { return tc.code }, 0)
			rec := record(t, "m1", "build_finished_failed.json", nil)
			rec.Attributes["ApproximateReceiveCount"] = "3"
			resp, err := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{rec}})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(resp.BatchItemFailures) == 1; got != tc.wantFailed {
				t.Errorf("failures = %v, want failed=%v", resp.BatchItemFailures, tc.wantFailed)
			}
			if tc.wantFailed {
				// min(2^3 s, MAX_BACKOFF) with the jitter pinned at its middle.
				if len(r.vis.calls) != 1 || r.vis.calls[0] != (visCall{"rh-m1", 8 * time.Second}) {
					t.Errorf("visibility calls = %v, want one of 8s", r.vis.calls)
				}
			} else if len(r.vis.calls) != 0 {
				t.Errorf("visibility changed on success: %v", r.vis.calls)
			}
			if tc.wantDLQ != "" {
				if len(r.dlq.calls) != 1 || r.dlq.calls[0] != (dlqCall{"m1", tc.wantDLQ}) {
					t.Errorf("dlq = %v", r.dlq.calls)
				}
				if !strings.Contains(r.logs.String(), `"sqibs_status":`+strconv.Itoa(tc.code)) {
					t.Errorf("permanent failure log lacks the SQIBS status: %s", r.logs.String())
				}
			} else if len(r.dlq.calls) != 0 {
				t.Errorf("unexpected dlq: %v", r.dlq.calls)
			}
			if !strings.Contains(r.emf.String(), `"`+tc.metric+`":1`) {
				t.Errorf("metric %s not emitted: %s", tc.metric, r.emf.String())
			}
			ev := r.srv.events()
			if len(ev) != 1 || ev[0].ID != "acme/deploy-api/main" || ev[0].Status != "FAILED" {
				t.Errorf("SQIBS saw %+v", ev)
			}
		})
	}
}

// Two groups in one batch; group A fails in the middle. A's earlier message
// is delivered, the failing one and everything after it in A are reported
// failed (the later one never tried), and group B is delivered in order.
func TestGroupOrderOnFailure(t *testing.T) {
	r := newRig(t, func(n int, ev incident.Event, _ *http.Request) int {
		if ev.Branch == "main" && ev.BuildNumber == 2 {
			return 500
		}
		return 201
	}, 0)
	batch := []events.SQSMessage{
		record(t, "a1", "build_finished_failed.json", onBranch("main", 1, "failed")),
		record(t, "b1", "build_finished_failed.json", onBranch("release", 1, "failed")),
		record(t, "a2", "build_finished_failed.json", onBranch("main", 2, "passed")),
		record(t, "b2", "build_finished_failed.json", onBranch("release", 2, "passed")),
		record(t, "a3", "build_finished_failed.json", onBranch("main", 3, "failed")),
		record(t, "b3", "build_finished_failed.json", onBranch("release", 3, "failed")),
	}
	r.h.cfg.Rules.Branches = []string{"*"}
	// record() classifies with the default rules, which ignore "release":
	// set the group ids the receiver would have set with these rules.
	for i, id := range []string{"a1", "b1", "a2", "b2", "a3", "b3"} {
		branch := "main"
		if id[0] == 'b' {
			branch = "release"
		}
		batch[i].Attributes["MessageGroupId"] = "acme/deploy-api/" + branch
	}
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: batch})
	if got := failedIDs(resp); !slices.Equal(got, []string{"a2", "a3"}) {
		t.Fatalf("failed = %v, want [a2 a3]", got)
	}
	var a, b []int64
	for _, ev := range r.srv.events() {
		if ev.Branch == "main" {
			a = append(a, ev.BuildNumber)
		} else {
			b = append(b, ev.BuildNumber)
		}
	}
	if !slices.Equal(a, []int64{1, 2}) {
		t.Errorf("group A calls = %v, want [1 2] (3 must not be tried after 2 failed)", a)
	}
	if !slices.Equal(b, []int64{1, 2, 3}) {
		t.Errorf("group B calls = %v, want [1 2 3] in order", b)
	}
	// The failed message and the one held back behind it share the backoff,
	// so the group is released as one; group B is untouched.
	want := []visCall{{"rh-a2", 2 * time.Second}, {"rh-a3", 2 * time.Second}}
	if !slices.Equal(r.vis.calls, want) {
		t.Errorf("visibility = %v, want %v", r.vis.calls, want)
	}
}

func TestUnauthorizedRefetchesTokenOnce(t *testing.T) {
	r := newRig(t, func(n int, _ incident.Event, req *http.Request) int {
		if req.Header.Get("Authorization") != "Bearer rotated-token" {
			return 401
		}
		return 201
	}, 0)
	r.tok.next = "rotated-token"
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}})
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures = %v", resp.BatchItemFailures)
	}
	if r.tok.refreshed != 1 || len(r.srv.events()) != 2 {
		t.Errorf("refreshed %d times, %d SQIBS calls; want 1 and 2", r.tok.refreshed, len(r.srv.events()))
	}

	// Still refused after the refetch: transient, not dead-lettered.
	r2 := newRig(t, func(int, incident.Event, *http.Request) int { return 403 }, 0)
	resp, _ = r2.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}})
	if len(resp.BatchItemFailures) != 1 || len(r2.dlq.calls) != 0 || r2.tok.refreshed != 1 {
		t.Errorf("403 twice: failures %v, dlq %v, refreshed %d", resp.BatchItemFailures, r2.dlq.calls, r2.tok.refreshed)
	}
}

func TestSlowSQIBSTimesOut(t *testing.T) {
	release := make(chan struct{})
	r := newRig(t, func(int, incident.Event, *http.Request) int { <-release; return 201 }, 50*time.Millisecond)
	defer close(release)
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}})
	if len(resp.BatchItemFailures) != 1 || len(r.dlq.calls) != 0 {
		t.Errorf("timeout: failures %v dlq %v, want one transient failure", resp.BatchItemFailures, r.dlq.calls)
	}
}

func TestUnreadableMessagesGoToDLQ(t *testing.T) {
	tests := []struct {
		name, body, reason string
	}{
		{"unknown version", `{"v":2,"event":"build.finished","payload":{}}`, ReasonUnknownVersion},
		{"not json", `hello`, ReasonUnreadable},
		{"no payload", `{"v":1,"event":"build.finished"}`, ReasonUnreadable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil, 0)
			resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{raw("x", "g", tc.body)}})
			if len(resp.BatchItemFailures) != 0 {
				t.Errorf("failures = %v", resp.BatchItemFailures)
			}
			if len(r.dlq.calls) != 1 || r.dlq.calls[0].reason != tc.reason {
				t.Errorf("dlq = %v, want reason %s", r.dlq.calls, tc.reason)
			}
			if len(r.srv.events()) != 0 {
				t.Error("SQIBS was called")
			}
			if !strings.Contains(r.logs.String(), `"level":"ERROR"`) {
				t.Error("not logged loudly")
			}
		})
	}
	// When the DLQ itself fails the message stays on the queue.
	r := newRig(t, nil, 0)
	r.dlq.err = errors.New("dlq down")
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{raw("x", "g", `{"v":9}`)}})
	if len(resp.BatchItemFailures) != 1 {
		t.Errorf("DLQ failure must keep the message: %v", resp.BatchItemFailures)
	}
	if !strings.Contains(r.emf.String(), `"`+metrics.DeadLetterFailed+`":1`) {
		t.Errorf("the failed dead-letter send is not counted: %s", r.emf.String())
	}
	// No DLQ_URL: the same, counted too.
	r = newRig(t, nil, 0)
	r.h.dlq = nil
	resp, _ = r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{raw("x", "g", `{"v":9}`)}})
	if len(resp.BatchItemFailures) != 1 || !strings.Contains(r.emf.String(), `"`+metrics.DeadLetterFailed+`":1`) ||
		!strings.Contains(r.logs.String(), "no DLQ_URL configured") {
		t.Errorf("no DLQ: failures %v, metrics %s, logs %s", resp.BatchItemFailures, r.emf.String(), r.logs.String())
	}
}

func TestIgnoredAfterRulesChange(t *testing.T) {
	r := newRig(t, nil, 0)
	r.h.cfg.Rules.Pipelines = []string{"other"}
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}})
	if len(resp.BatchItemFailures) != 0 || len(r.srv.events()) != 0 || len(r.dlq.calls) != 0 {
		t.Errorf("ignored event: failures %v calls %d dlq %v", resp.BatchItemFailures, len(r.srv.events()), r.dlq.calls)
	}
}

func TestDeadlineLeavesRestToSQS(t *testing.T) {
	r := newRig(t, nil, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second) // < Reserve
	defer cancel()
	resp, _ := r.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{
		record(t, "m1", "build_finished_failed.json", nil), record(t, "m2", "build_finished_passed.json", nil),
	}})
	if got := failedIDs(resp); !slices.Equal(got, []string{"m1", "m2"}) || len(r.srv.events()) != 0 {
		t.Errorf("failed %v, calls %d", got, len(r.srv.events()))
	}
	// Nothing failed: they are made visible again at once.
	want := []visCall{{"rh-m1", 0}, {"rh-m2", 0}}
	if !slices.Equal(r.vis.calls, want) {
		t.Errorf("visibility = %v, want %v", r.vis.calls, want)
	}
}

// A function timeout shorter than one delivery's budget can never deliver
// anything: each invocation says so, loudly, instead of the messages
// silently cycling to the dead-letter queue.
func TestInvocationShorterThanBudgetIsAnError(t *testing.T) {
	r := newRig(t, nil, 0)
	r.h.cfg.Reserve = 31 * time.Second // SQIBS_TIMEOUT 15s in a 30 s function
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, _ := r.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}})
	if got := failedIDs(resp); !slices.Equal(got, []string{"m1"}) || len(r.srv.events()) != 0 {
		t.Errorf("failed %v, calls %d", got, len(r.srv.events()))
	}
	logs := r.logs.String()
	if !strings.Contains(logs, `"level":"ERROR","msg":"invocation shorter than one delivery may take`) ||
		!strings.Contains(logs, `"delivery_budget_ms":31000`) {
		t.Errorf("no error naming the budget:\n%s", logs)
	}

	// With time enough, no such line.
	r2 := newRig(t, nil, 0)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if resp, _ := r2.h.Handle(ctx2, events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}}); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures %v", resp.BatchItemFailures)
	}
	if strings.Contains(r2.logs.String(), "invocation shorter") {
		t.Errorf("error logged with time to spare:\n%s", r2.logs.String())
	}
}

// A delivery started inside the reserve still cannot run the invocation
// out of time: it is cut FinishTime before the deadline and reported as a
// transient failure, so the handler answers (and only that message and its
// group's tail are retried) instead of Lambda timing the batch out.
func TestDeliveryCutBeforeTheDeadline(t *testing.T) {
	release := make(chan struct{})
	r := newRig(t, func(_ int, ev incident.Event, _ *http.Request) int {
		if ev.Status == "PASSED" {
			<-release // SQIBS hangs on the resolve
		}
		return 201
	}, time.Minute)
	t.Cleanup(func() { close(release) }) // runs before the server's Close, which waits for handlers
	r.h.cfg.Reserve = time.Millisecond   // let the slow delivery start
	deadline := time.Now().Add(FinishTime + 500*time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	other := record(t, "x1", "build_finished_failed.json", nil)
	other.Attributes["MessageGroupId"] = "other-group"
	resp, _ := r.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{
		record(t, "m1", "build_finished_failed.json", nil), record(t, "m2", "build_finished_passed.json", nil),
		other, record(t, "m3", "build_finished_failed.json", nil),
	}})
	if ctx.Err() != nil {
		t.Fatalf("the handler answered after its deadline")
	}
	if got := failedIDs(resp); !slices.Equal(got, []string{"m2", "m3"}) {
		t.Errorf("failed %v, want the cut delivery and the rest of its group", got)
	}
	if n := len(r.srv.events()); n != 3 {
		t.Errorf("%d SQIBS calls, want 3 (m1, x1 and the cut m2)", n)
	}
	if !strings.Contains(r.logs.String(), "SQIBS delivery failed: will retry") {
		t.Errorf("the cut delivery was not reported as a transient failure:\n%s", r.logs.String())
	}
}

// A stalled SQS call recording an outcome (retry delay, dead letter) must
// not run the invocation past its deadline: Lambda would fail the whole
// batch and SQS redeliver it, already-delivered events included.
func TestStalledOutcomeCallsEndBeforeTheDeadline(t *testing.T) {
	r := newRig(t, func(_ int, ev incident.Event, _ *http.Request) int {
		if ev.Status == "PASSED" {
			return 400 // permanent: dead-lettered
		}
		return 500 // transient: retry delay
	}, time.Minute)
	r.vis.stall, r.dlq.stall = true, true
	r.h.cfg.Reserve = time.Millisecond
	deadline := time.Now().Add(FinishTime + 500*time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	failed := record(t, "f1", "build_finished_failed.json", nil)
	passed := record(t, "p1", "build_finished_passed.json", nil)
	passed.Attributes["MessageGroupId"] = "other-group"

	done := make(chan events.SQSEventResponse, 1)
	go func() {
		resp, _ := r.h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{failed, passed}})
		done <- resp
	}()
	select {
	case resp := <-done:
		if time.Now().After(deadline) {
			t.Fatalf("the handler answered after its deadline")
		}
		// Neither outcome was recorded, so both stay on the queue.
		if got := failedIDs(resp); !slices.Equal(got, []string{"f1", "p1"}) {
			t.Errorf("failed %v, want both", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler is still waiting on stalled SQS calls 10 s after its deadline")
	}
	for _, want := range []string{"could not set the retry delay", "dead-letter send failed"} {
		if !strings.Contains(r.logs.String(), want) {
			t.Errorf("no %q in the logs:\n%s", want, r.logs.String())
		}
	}
}

// Independent groups are delivered concurrently: two groups each block in
// SQIBS until both have arrived, which only happens when they run at once.
func TestGroupsRunConcurrently(t *testing.T) {
	var mu sync.Mutex
	arrived := 0
	both := make(chan struct{})
	r := newRig(t, func(int, incident.Event, *http.Request) int {
		mu.Lock()
		arrived++
		if arrived == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
			return 201
		case <-time.After(5 * time.Second):
			return 500
		}
	}, 10*time.Second)
	a := record(t, "a", "build_finished_failed.json", nil)
	b := record(t, "b", "build_finished_failed.json", nil)
	b.Attributes["MessageGroupId"] = "other-group"
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{a, b}})
	if len(resp.BatchItemFailures) != 0 {
		t.Errorf("groups did not run concurrently: %v", resp.BatchItemFailures)
	}
}

func TestBackoff(t *testing.T) {
	h := New(Config{}, nil, nil, nil, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil)
	for _, tc := range []struct {
		receives string
		jitter   float64
		want     time.Duration
	}{
		{"1", 0.5, 2 * time.Second}, {"", 0.5, 2 * time.Second}, {"4", 0.5, 16 * time.Second},
		{"4", 0, 13 * time.Second}, {"4", 0.999, 19 * time.Second}, {"7", 0.5, 120 * time.Second},
		// At the cap the jitter only shortens: no retry waits longer than MAX_BACKOFF.
		{"30", 0.999, 120 * time.Second}, {"10", 0, 96 * time.Second}, {"6", 0.999, 77 * time.Second},
	} {
		h.jitter = func() float64 { return tc.jitter }
		got := h.backoff(events.SQSMessage{Attributes: map[string]string{"ApproximateReceiveCount": tc.receives}})
		if got != tc.want {
			t.Errorf("receives %s jitter %v: %v, want %v", tc.receives, tc.jitter, got, tc.want)
		}
	}
}

func TestLogsHoldNoToken(t *testing.T) {
	codes := []int{201, 500, 400, 401}
	r := newRig(t, func(n int, _ incident.Event, _ *http.Request) int { return codes[n%len(codes)] }, 0)
	var recs []events.SQSMessage
	for i := range 4 {
		recs = append(recs, record(t, fmt.Sprint("m", i), "build_finished_large.json", onBranch("main", int64(i+1), "failed")))
		recs[i].Attributes["MessageGroupId"] = fmt.Sprint("g", i)
	}
	_, _ = r.h.Handle(context.Background(), events.SQSEvent{Records: recs})
	for _, s := range []string{sqibsToken, "SECRET-", "@example.com"} {
		if strings.Contains(r.logs.String(), s) || strings.Contains(r.emf.String(), s) {
			t.Errorf("logs contain %q", s)
		}
	}
	if !strings.Contains(r.logs.String(), "delivered to SQIBS") {
		t.Error("no delivery log")
	}
}
