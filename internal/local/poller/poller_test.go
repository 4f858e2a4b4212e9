package poller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

var (
	_ Source  = (*memqueue.Queue)(nil)
	_ Source  = (*SQSSource)(nil)
	_ SQSAPI  = (*sqs.Client)(nil)
	_ Handler = (*dispatcher.Handler)(nil).Handle
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newQueue(t *testing.T) (*memqueue.Queue, *testkit.Clock) {
	t.Helper()
	clk := testkit.NewClock(time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC))
	return memqueue.New(memqueue.Options{Now: clk.Now}), clk
}

func publish(t *testing.T, q *memqueue.Queue, group string, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if _, err := q.Publish(context.Background(), queue.Message{Body: []byte(b), GroupID: group, DedupID: b}); err != nil {
			t.Fatal(err)
		}
	}
}

// recorder is a fake handler: it records every invocation, answers through
// respond, and tells seen when n records have been delivered in total.
type recorder struct {
	mu      sync.Mutex
	batches [][]events.SQSMessage
	ctxs    []context.Context
	records int
	n       int
	seen    chan struct{}
	respond func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error)
}

func newRecorder(n int, respond func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error)) *recorder {
	return &recorder{n: n, seen: make(chan struct{}), respond: respond}
}

func (r *recorder) handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	r.mu.Lock()
	r.batches = append(r.batches, ev.Records)
	r.ctxs = append(r.ctxs, ctx)
	before := r.records
	r.records += len(ev.Records)
	if before < r.n && r.records >= r.n {
		close(r.seen)
	}
	r.mu.Unlock()
	if r.respond == nil {
		return events.SQSEventResponse{}, nil
	}
	return r.respond(ctx, ev.Records)
}

func (r *recorder) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, b := range r.batches {
		for _, m := range b {
			out = append(out, m.Body)
		}
	}
	return out
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second): // hang guard only
		t.Fatalf("timed out waiting for %s", what)
	}
}

// start runs Run in the background; stop cancels it and waits for it.
func start(t *testing.T, src Source, h Handler, o Options) (stop func()) {
	t.Helper()
	if o.Log == nil {
		o.Log = quiet
	}
	if o.Wait == 0 {
		o.Wait = 20 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, src, h, o) }()
	return func() {
		t.Helper()
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

func TestSuccessesDeleted(t *testing.T) {
	q, _ := newQueue(t)
	publish(t, q, "A", "a1", "a2")
	publish(t, q, "B", "b1", "b2", "b3")
	rec := newRecorder(5, nil)
	stop := start(t, q, rec.handle, Options{InvokeTimeout: 7 * time.Second})
	wait(t, rec.seen, "5 records")
	stop()

	if s := q.Stats(); s != (memqueue.Stats{}) {
		t.Fatalf("stats = %+v, want everything deleted", s)
	}
	got := rec.bodies()
	slices.Sort(got)
	if want := []string{"a1", "a2", "b1", "b2", "b3"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	for i, ctx := range rec.ctxs {
		dl, ok := ctx.Deadline()
		if !ok || time.Until(dl) > 7*time.Second {
			t.Errorf("invocation %d: deadline %v (set: %v), want within the 7s InvokeTimeout", i, dl, ok)
		}
		if lc, ok := lambdacontext.FromContext(ctx); !ok || lc.AwsRequestID == "" {
			t.Errorf("invocation %d: no lambda context with a request id", i)
		}
	}
	for _, b := range rec.batches {
		for _, m := range b {
			if m.EventSourceARN != q.ARN() || m.ReceiptHandle == "" || m.Attributes["MessageGroupId"] == "" {
				t.Errorf("record not as Lambda delivers it: %+v", m)
			}
		}
	}
}

func TestBatchSize(t *testing.T) {
	q, _ := newQueue(t)
	for i := range 7 {
		publish(t, q, fmt.Sprint("g", i), fmt.Sprint("m", i))
	}
	rec := newRecorder(7, nil)
	stop := start(t, q, rec.handle, Options{BatchSize: 3, Concurrency: 1})
	wait(t, rec.seen, "7 records")
	stop()
	for _, b := range rec.batches {
		if len(b) > 3 {
			t.Fatalf("batch of %d records with BatchSize 3", len(b))
		}
	}
	if len(rec.batches) < 3 {
		t.Fatalf("%d batches for 7 records of at most 3", len(rec.batches))
	}
}

// A reported failure is kept (not deleted) and comes back once its
// visibility times out; the rest of the batch is deleted.
func TestBatchItemFailuresKeptAndRedelivered(t *testing.T) {
	q, clk := newQueue(t)
	publish(t, q, "A", "a1", "a2")
	publish(t, q, "B", "b1")
	// As the dispatcher does: a1 fails, a2 is held back behind it.
	failA := func(_ context.Context, recs []events.SQSMessage) (events.SQSEventResponse, error) {
		var resp events.SQSEventResponse
		for _, m := range recs {
			if m.Attributes["MessageGroupId"] == "A" {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
			}
		}
		return resp, nil
	}
	rec := newRecorder(3, failA)
	stop := start(t, q, rec.handle, Options{})
	wait(t, rec.seen, "3 records")
	stop()
	if s := q.Stats(); s != (memqueue.Stats{InFlight: 2}) {
		t.Fatalf("after the first pass: stats = %+v, want a1 and a2 kept in flight, b1 deleted", s)
	}

	clk.Advance(memqueue.DefaultVisibilityTimeout)
	rec2 := newRecorder(2, nil)
	stop = start(t, q, rec2.handle, Options{})
	wait(t, rec2.seen, "the redelivery")
	stop()
	if got := rec2.bodies(); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("redelivered %q, want a1 then a2", got)
	}
	for _, m := range rec2.batches[0] {
		if m.Attributes["ApproximateReceiveCount"] != "2" {
			t.Errorf("%s: ApproximateReceiveCount %s, want 2", m.Body, m.Attributes["ApproximateReceiveCount"])
		}
	}
	if s := q.Stats(); s != (memqueue.Stats{}) {
		t.Fatalf("stats = %+v, want empty", s)
	}
}

// Whatever makes the invocation fail as a whole, nothing is deleted.
func TestFailedInvocationDeletesNothing(t *testing.T) {
	tests := []struct {
		name    string
		respond func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error)
	}{
		{"handler error", func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error) {
			return events.SQSEventResponse{}, errors.New("boom")
		}},
		{"handler panic", func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error) {
			panic("boom")
		}},
		{"item identifier not in the batch", func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error) {
			return events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{{ItemIdentifier: "not-a-message"}}}, nil
		}},
		{"empty item identifier", func(context.Context, []events.SQSMessage) (events.SQSEventResponse, error) {
			return events.SQSEventResponse{BatchItemFailures: []events.SQSBatchItemFailure{{}}}, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, clk := newQueue(t)
			publish(t, q, "A", "a1")
			publish(t, q, "B", "b1", "b2")
			rec := newRecorder(3, tt.respond)
			stop := start(t, q, rec.handle, Options{})
			wait(t, rec.seen, "3 records")
			stop()
			if s := q.Stats(); s != (memqueue.Stats{InFlight: 3}) {
				t.Fatalf("stats = %+v, want all 3 kept in flight", s)
			}
			// They all come back after the visibility timeout.
			clk.Advance(memqueue.DefaultVisibilityTimeout)
			rec2 := newRecorder(3, nil)
			stop = start(t, q, rec2.handle, Options{})
			wait(t, rec2.seen, "the redelivery")
			stop()
			if s := q.Stats(); s != (memqueue.Stats{}) {
				t.Fatalf("stats = %+v, want empty", s)
			}
		})
	}
}

// Cancelling Run's context lets the batch in hand finish — its handler keeps
// a live context and its successes are deleted — and starts no new one.
func TestCancelDrainsBatchInHand(t *testing.T) {
	q, _ := newQueue(t)
	publish(t, q, "A", "a1")
	started, release := make(chan struct{}), make(chan struct{})
	var handlerCtxErr error
	h := func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
		close(started)
		<-release
		handlerCtxErr = ctx.Err()
		return events.SQSEventResponse{}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	// One worker, busy with the batch in hand: a second one could be inside
	// a receive that passed its context check just before the cancel, and
	// take b1 as a real receive in flight may (a race of the test, not a
	// loss: such a batch is run too).
	go func() { errc <- Run(ctx, q, h, Options{Log: quiet, Concurrency: 1, Wait: time.Minute}) }()
	wait(t, started, "the handler")
	cancel()
	publish(t, q, "B", "b1") // after the cancel: must not be picked up
	select {
	case err := <-errc:
		t.Fatalf("Run returned (%v) with a batch in hand", err)
	default:
	}
	close(release)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if handlerCtxErr != nil {
		t.Fatalf("handler context ended with Run's: %v", handlerCtxErr)
	}
	if s := q.Stats(); s != (memqueue.Stats{Visible: 1}) {
		t.Fatalf("stats = %+v, want a1 deleted and b1 untouched", s)
	}
}

func TestStopsWhenSourceCloses(t *testing.T) {
	q, _ := newQueue(t)
	errc := make(chan error, 1)
	go func() {
		errc <- Run(context.Background(), q, func(context.Context, events.SQSEvent) (events.SQSEventResponse, error) {
			return events.SQSEventResponse{}, nil
		}, Options{Log: quiet, Wait: time.Minute})
	}()
	q.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the source closed")
	}
}

// flaky fails its first Receive calls, then serves the queue.
type flaky struct {
	*memqueue.Queue
	mu    sync.Mutex
	fails int
}

func (f *flaky) Receive(ctx context.Context, n int, wait time.Duration) ([]events.SQSMessage, error) {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return nil, errors.New("throttled")
	}
	f.mu.Unlock()
	return f.Queue.Receive(ctx, n, wait)
}

func TestReceiveErrorsAreRetried(t *testing.T) {
	q, _ := newQueue(t)
	publish(t, q, "A", "a1")
	src := &flaky{Queue: q, fails: 2}
	rec := newRecorder(1, nil)
	stop := start(t, src, rec.handle, Options{Concurrency: 1})
	wait(t, rec.seen, "a1 after the receive errors")
	stop()
	if s := q.Stats(); s != (memqueue.Stats{}) {
		t.Fatalf("stats = %+v", s)
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults(memqueue.New(memqueue.Options{}))
	if o.BatchSize != 10 || o.Wait != time.Second || o.Concurrency != 2 || o.InvokeTimeout != 30*time.Second || o.Log == nil {
		t.Errorf("memqueue defaults = %+v", o)
	}
	if o := (Options{BatchSize: 11}).withDefaults(&SQSSource{}); o.Wait != SQSWait || o.BatchSize != 10 {
		t.Errorf("SQS defaults = %+v", o)
	}
	if err := Run(context.Background(), nil, nil, Options{}); err == nil {
		t.Error("Run with no source or handler succeeded")
	}
}
