package memqueue

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// The queue stands in for SQS on both sides of the dispatcher.
var (
	_ queue.Publisher        = (*Queue)(nil)
	_ dispatcher.Visibility  = (*Queue)(nil)
	_ dispatcher.DeadLetters = (*Queue)(nil)
)

var t0 = time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)

// harness drives a queue on a fake clock; messages are named by body.
type harness struct {
	t   *testing.T
	q   *Queue
	clk *testkit.Clock
	ctx context.Context
	got map[string]events.SQSMessage // body → last delivery
	log *testkit.Buffer              // the queue's log (JSON lines)
}

func newHarness(t *testing.T, o Options) *harness {
	t.Helper()
	clk := testkit.NewClock(t0)
	o.Now = clk.Now
	log := &testkit.Buffer{}
	o.Log = slog.New(slog.NewJSONHandler(log, nil))
	return &harness{t: t, q: New(o), clk: clk, ctx: context.Background(), got: map[string]events.SQSMessage{}, log: log}
}

// deadLogged checks that each dead letter was logged at ERROR with its
// reason, message id and group, one line each.
func (h *harness) deadLogged() {
	h.t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.log.String()), "\n") {
		var m map[string]any
		if l != "" && json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "message moved to the dead letters" {
			lines = append(lines, m)
		}
	}
	dead := h.q.DeadLetters()
	if len(lines) != len(dead) {
		h.t.Fatalf("%d dead letters, %d logged:\n%s", len(dead), len(lines), h.log.String())
	}
	for i, d := range dead {
		l := lines[i]
		if l["level"] != "ERROR" || l["reason"] != d.Reason || l["message_id"] != d.Message.MessageId ||
			l["incident_id"] != d.Message.Attributes["MessageGroupId"] {
			h.t.Errorf("dead letter %+v logged as %v", d, l)
		}
	}
}

// pub publishes body in group with the body as dedup id, returns the id.
func (h *harness) pub(group, body string) string {
	h.t.Helper()
	return h.pubDedup(group, body, body)
}

func (h *harness) pubDedup(group, body, dedup string) string {
	h.t.Helper()
	id, err := h.q.Publish(h.ctx, queue.Message{Body: []byte(body), GroupID: group, DedupID: dedup})
	if err != nil {
		h.t.Fatalf("publish %s: %v", body, err)
	}
	return id
}

// recv receives without waiting and checks the bodies delivered, in order.
func (h *harness) recv(n int, want ...string) []events.SQSMessage {
	h.t.Helper()
	msgs, err := h.q.Receive(h.ctx, n, 0)
	if err != nil {
		h.t.Fatalf("receive: %v", err)
	}
	var bodies []string
	for _, m := range msgs {
		bodies = append(bodies, m.Body)
		h.got[m.Body] = m
	}
	if !slices.Equal(bodies, want) {
		h.t.Fatalf("receive(%d) = %q, want %q", n, bodies, want)
	}
	return msgs
}

func (h *harness) handle(body string) string {
	h.t.Helper()
	m, ok := h.got[body]
	if !ok {
		h.t.Fatalf("%s was never received", body)
	}
	return m.ReceiptHandle
}

func (h *harness) del(body string) {
	h.t.Helper()
	if err := h.q.Delete(h.ctx, h.handle(body)); err != nil {
		h.t.Fatalf("delete %s: %v", body, err)
	}
}

func (h *harness) delStale(body string) {
	h.t.Helper()
	if err := h.q.Delete(h.ctx, h.handle(body)); !errors.Is(err, ErrStaleHandle) {
		h.t.Fatalf("delete %s with its last handle: err = %v, want ErrStaleHandle", body, err)
	}
}

func (h *harness) setVis(body string, d time.Duration) {
	h.t.Helper()
	if err := h.q.SetVisibility(h.ctx, h.q.ARN(), h.handle(body), d); err != nil {
		h.t.Fatalf("set visibility of %s to %s: %v", body, d, err)
	}
}

func (h *harness) stats(want Stats) {
	h.t.Helper()
	if got := h.q.Stats(); got != want {
		h.t.Fatalf("stats = %+v, want %+v", got, want)
	}
}

func (h *harness) attr(body, name string) string {
	h.t.Helper()
	return h.got[body].Attributes[name]
}

func TestScenarios(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		run  func(h *harness)
	}{
		{"order within a group", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.pub("A", "a3")
			h.recv(10, "a1", "a2", "a3")
			h.stats(Stats{InFlight: 3})
		}},
		{"batch size limits a group's run; the rest waits for the group", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.pub("A", "a3")
			h.recv(2, "a1", "a2")
			h.recv(10) // a3 is blocked while a1, a2 are in flight
			h.del("a1")
			h.recv(10) // a2 still in flight
			h.del("a2")
			h.recv(10, "a3")
		}},
		{"group blocked while in flight, released on delete", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.recv(1, "a1")
			h.recv(10)
			h.stats(Stats{Visible: 1, InFlight: 1})
			h.del("a1")
			h.stats(Stats{Visible: 1})
			h.recv(10, "a2")
		}},
		{"group released on visibility expiry, first message first", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.recv(1, "a1")
			first := h.handle("a1")
			h.clk.Advance(DefaultVisibilityTimeout - time.Millisecond)
			h.recv(10)
			h.clk.Advance(time.Millisecond)
			h.recv(10, "a1", "a2")
			if h.handle("a1") == first {
				h.t.Fatal("redelivery kept the receipt handle")
			}
			if err := h.q.Delete(h.ctx, first); !errors.Is(err, ErrStaleHandle) {
				h.t.Fatalf("delete with the expired handle: %v, want ErrStaleHandle", err)
			}
		}},
		{"different groups interleave", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("B", "b1")
			h.pub("A", "a2")
			h.pub("B", "b2")
			h.recv(1, "a1")
			h.recv(1, "b1")
			h.recv(10)
			h.del("b1")
			h.recv(10, "b2")
			h.del("a1")
			h.recv(10, "a2")
		}},
		{"oldest group first, a group's run kept together", Options{}, func(h *harness) {
			h.pub("B", "b1")
			h.pub("A", "a1")
			h.pub("B", "b2")
			h.pub("A", "a2")
			h.recv(3, "b1", "b2", "a1")
		}},
		{"dedup within the window, also after delete; not after it", Options{}, func(h *harness) {
			id := h.pubDedup("A", "x1", "d")
			if dup := h.pubDedup("A", "x2", "d"); dup != id {
				h.t.Fatalf("duplicate got id %s, want the original %s", dup, id)
			}
			h.stats(Stats{Visible: 1})
			h.recv(10, "x1")
			h.del("x1")
			h.clk.Advance(DefaultDedupWindow - time.Second)
			if dup := h.pubDedup("A", "x3", "d"); dup != id {
				h.t.Fatalf("duplicate after delete got id %s, want %s", dup, id)
			}
			h.stats(Stats{})
			h.clk.Advance(time.Second)
			if again := h.pubDedup("A", "x4", "d"); again == id {
				h.t.Fatal("dedup id still suppressed after the window")
			}
			h.recv(10, "x4")
		}},
		{"custom dedup window", Options{DedupWindow: time.Minute}, func(h *harness) {
			id := h.pubDedup("A", "x1", "d")
			h.clk.Advance(time.Minute)
			if again := h.pubDedup("A", "x2", "d"); again == id {
				h.t.Fatal("dedup id still suppressed after a 1m window")
			}
			h.stats(Stats{Visible: 2})
		}},
		{"empty dedup id is content-based", Options{}, func(h *harness) {
			id := h.pubDedup("A", "same", "")
			if dup := h.pubDedup("B", "same", ""); dup != id {
				h.t.Fatalf("same body without dedup id got id %s, want %s", dup, id)
			}
			h.recv(10, "same")
			sum := sha256.Sum256([]byte("same"))
			if got := h.attr("same", "MessageDeduplicationId"); got != hex.EncodeToString(sum[:]) {
				h.t.Fatalf("MessageDeduplicationId = %q, want the body's SHA-256", got)
			}
		}},
		{"receive count increments, first receive time kept", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.clk.Advance(time.Second)
			h.recv(1, "a1")
			firstRecv := h.attr("a1", "ApproximateFirstReceiveTimestamp")
			for n := 1; n <= 3; n++ {
				if got := h.attr("a1", "ApproximateReceiveCount"); got != strconv.Itoa(n) {
					h.t.Fatalf("receive %d: ApproximateReceiveCount = %s", n, got)
				}
				if got := h.attr("a1", "ApproximateFirstReceiveTimestamp"); got != firstRecv {
					h.t.Fatalf("receive %d: first receive timestamp changed: %s → %s", n, firstRecv, got)
				}
				h.clk.Advance(DefaultVisibilityTimeout)
				h.recv(1, "a1")
			}
			if got, want := h.attr("a1", "SentTimestamp"), strconv.FormatInt(t0.UnixMilli(), 10); got != want {
				h.t.Fatalf("SentTimestamp = %s, want %s", got, want)
			}
			if want := strconv.FormatInt(t0.Add(time.Second).UnixMilli(), 10); firstRecv != want {
				h.t.Fatalf("ApproximateFirstReceiveTimestamp = %s, want %s", firstRecv, want)
			}
		}},
		{"max receives moves to the dead letters and frees the group", Options{MaxReceives: 2}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.recv(1, "a1")
			h.clk.Advance(DefaultVisibilityTimeout)
			h.recv(1, "a1")
			h.stats(Stats{Visible: 1, InFlight: 1})
			h.clk.Advance(DefaultVisibilityTimeout)
			h.stats(Stats{Visible: 1, Dead: 1})
			dl := h.q.DeadLetters()
			if len(dl) != 1 || dl[0].Reason != ReasonMaxReceives || dl[0].Message.Body != "a1" ||
				dl[0].Message.MessageId != h.got["a1"].MessageId || !dl[0].At.Equal(h.clk.Now()) ||
				dl[0].Message.Attributes["ApproximateReceiveCount"] != "2" {
				h.t.Fatalf("dead letters = %+v", dl)
			}
			h.deadLogged()
			h.recv(10, "a2")
		}},
		{"a held-back run expiring together is dead-lettered in send order", Options{MaxReceives: 1}, func(h *harness) {
			// Map iteration gives a random order: with six messages, a wrong
			// implementation passes by chance 1 time in 720.
			bodies := []string{"a1", "a2", "a3", "a4", "a5", "a6"}
			for _, b := range bodies {
				h.pub("A", b)
			}
			h.recv(10, bodies...)
			h.clk.Advance(DefaultVisibilityTimeout)
			h.stats(Stats{Dead: len(bodies)})
			var got []string
			for _, d := range h.q.DeadLetters() {
				got = append(got, d.Message.Body)
			}
			if !slices.Equal(got, bodies) {
				h.t.Fatalf("dead letters in order %v, want %v", got, bodies)
			}
			h.deadLogged() // in the same order
		}},
		{"default max receives is the template's redrive maxReceiveCount", Options{}, func(h *harness) {
			h.pub("A", "a1")
			for range queue.MaxReceiveCount {
				h.recv(1, "a1")
				h.clk.Advance(DefaultVisibilityTimeout)
			}
			h.recv(1)
			h.stats(Stats{Dead: 1})
			h.deadLogged()
		}},
		{"SetVisibility(0) redelivers at once", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.recv(1, "a1")
			h.setVis("a1", 0)
			h.stats(Stats{Visible: 2})
			h.recv(10, "a1", "a2")
			if got := h.attr("a1", "ApproximateReceiveCount"); got != "2" {
				h.t.Fatalf("ApproximateReceiveCount = %s, want 2", got)
			}
		}},
		{"SetVisibility(0) at the last receive dead-letters", Options{MaxReceives: 1}, func(h *harness) {
			h.pub("A", "a1")
			h.recv(1, "a1")
			h.setVis("a1", 0)
			h.stats(Stats{Dead: 1})
		}},
		{"SetVisibility extends and shortens from now", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.recv(1, "a1")
			h.clk.Advance(20 * time.Second)
			h.setVis("a1", time.Minute)
			h.clk.Advance(59 * time.Second)
			h.recv(10)
			h.setVis("a1", 2*time.Second)
			h.clk.Advance(time.Second)
			h.recv(10)
			h.clk.Advance(time.Second)
			h.recv(10, "a1")
		}},
		{"custom visibility timeout", Options{VisibilityTimeout: 5 * time.Second}, func(h *harness) {
			h.pub("A", "a1")
			h.recv(1, "a1")
			h.clk.Advance(5 * time.Second)
			h.recv(1, "a1")
		}},
		{"stale and foreign handles", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.recv(1, "a1")
			h.del("a1")
			h.delStale("a1")
			if err := h.q.SetVisibility(h.ctx, h.q.ARN(), h.handle("a1"), 0); !errors.Is(err, ErrStaleHandle) {
				h.t.Fatalf("set visibility on a deleted message: %v", err)
			}
			if err := h.q.Delete(h.ctx, "no-such-handle"); !errors.Is(err, ErrStaleHandle) {
				h.t.Fatalf("delete with an unknown handle: %v", err)
			}
			h.recv(1, "a2")
			if err := h.q.SetVisibility(h.ctx, "arn:aws:sqs:us-east-1:1:other.fifo", h.handle("a2"), 0); err == nil {
				h.t.Fatal("set visibility with another queue's ARN succeeded")
			}
			for _, d := range []time.Duration{-time.Second, MaxVisibility + time.Second} {
				if err := h.q.SetVisibility(h.ctx, h.q.ARN(), h.handle("a2"), d); err == nil {
					h.t.Fatalf("set visibility %s succeeded", d)
				}
			}
			h.clk.Advance(DefaultVisibilityTimeout)
			h.delStale("a2")
		}},
		{"DeadLetter of an in-flight message: never redelivered, its delete succeeds", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.pub("A", "a2")
			h.recv(1, "a1")
			if err := h.q.DeadLetter(h.ctx, h.got["a1"], "sqibs_rejected"); err != nil {
				h.t.Fatal(err)
			}
			h.stats(Stats{Visible: 1, Dead: 1})
			h.recv(10, "a2")
			h.del("a1") // the poller deletes what the handler reported done
			h.delStale("a1")
			h.del("a2")
			h.clk.Advance(time.Hour)
			h.recv(10)
			dl := h.q.DeadLetters()
			if len(dl) != 1 || dl[0].Reason != "sqibs_rejected" || dl[0].Message.MessageId != h.got["a1"].MessageId {
				h.t.Fatalf("dead letters = %+v", dl)
			}
			h.deadLogged()
		}},
		{"DeadLetter of a message no longer in flight", Options{}, func(h *harness) {
			h.pub("A", "a1")
			h.recv(1, "a1")
			h.clk.Advance(DefaultVisibilityTimeout)
			if err := h.q.DeadLetter(h.ctx, h.got["a1"], "unreadable_envelope"); err != nil {
				h.t.Fatal(err)
			}
			h.recv(10)
			h.stats(Stats{Dead: 1})
		}},
		{"DeadLetter of a foreign message just records it", Options{}, func(h *harness) {
			h.pub("A", "a1")
			if err := h.q.DeadLetter(h.ctx, events.SQSMessage{MessageId: "elsewhere", Body: "x"}, "r"); err != nil {
				h.t.Fatal(err)
			}
			h.stats(Stats{Visible: 1, Dead: 1})
		}},
		{"batch size is clamped to 1..10", Options{}, func(h *harness) {
			var want []string
			for i := range 12 {
				b := fmt.Sprintf("m%02d", i)
				h.pub(fmt.Sprint("g", i), b)
				want = append(want, b)
			}
			h.recv(0, want[0])
			h.recv(50, want[1:11]...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(newHarness(t, tt.opts))
		})
	}
}

// The record is what Lambda's SQS event source mapping hands the function.
func TestEventShape(t *testing.T) {
	h := newHarness(t, Options{ARN: "arn:aws:sqs:eu-west-1:123456789012:bridge.fifo"})
	id := h.pubDedup("acme/deploy api/main", `{"v":1}`, "dd")
	m := h.recv(1, `{"v":1}`)[0]
	sum := md5.Sum([]byte(`{"v":1}`))
	want := map[string]string{
		"MessageId":      id,
		"EventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:bridge.fifo",
		"EventSource":    "aws:sqs",
		"AWSRegion":      "eu-west-1",
		"Md5OfBody":      hex.EncodeToString(sum[:]),
		"MessageGroupId": queue.SafeFIFOID("acme/deploy api/main"),
		"SenderId":       "123456789012",
		"Dedup":          "dd",
		"Count":          "1",
	}
	got := map[string]string{
		"MessageId":      m.MessageId,
		"EventSourceARN": m.EventSourceARN,
		"EventSource":    m.EventSource,
		"AWSRegion":      m.AWSRegion,
		"Md5OfBody":      m.Md5OfBody,
		"MessageGroupId": m.Attributes["MessageGroupId"],
		"SenderId":       m.Attributes["SenderId"],
		"Dedup":          m.Attributes["MessageDeduplicationId"],
		"Count":          m.Attributes["ApproximateReceiveCount"],
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(m.MessageId) {
		t.Errorf("MessageId %q is not a UUID", m.MessageId)
	}
	if m.ReceiptHandle == "" {
		t.Error("no receipt handle")
	}
	for _, k := range []string{"SentTimestamp", "ApproximateFirstReceiveTimestamp", "SequenceNumber"} {
		if m.Attributes[k] == "" {
			t.Errorf("attribute %s missing", k)
		}
	}
	if q := New(Options{}); q.ARN() != DefaultARN {
		t.Errorf("default ARN = %q", q.ARN())
	}
}

func TestPublishRefuses(t *testing.T) {
	q := New(Options{})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		m    queue.Message
		want error
	}{
		{"empty body", context.Background(), queue.Message{GroupID: "g"}, nil},
		{"body over the SQS limit", context.Background(), queue.Message{Body: make([]byte, MaxBodyBytes+1), GroupID: "g"}, nil},
		{"canceled context", canceled, queue.Message{Body: []byte("x"), GroupID: "g"}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := q.Publish(tt.ctx, tt.m)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want an error (%v)", err, tt.want)
			}
		})
	}
	if _, err := q.Publish(context.Background(), queue.Message{Body: make([]byte, MaxBodyBytes), GroupID: "g"}); err != nil {
		t.Fatalf("body at the limit: %v", err)
	}
	q.Close()
	if _, err := q.Publish(context.Background(), queue.Message{Body: []byte("x"), GroupID: "g"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

type result struct {
	msgs []events.SQSMessage
	err  error
}

// blockingReceive starts a long poll and returns once it is blocked.
func blockingReceive(t *testing.T, q *Queue, ctx context.Context, wait time.Duration) <-chan result {
	t.Helper()
	waiting := make(chan struct{}, 16)
	q.mu.Lock()
	q.onWait = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
	out := make(chan result, 1)
	go func() {
		msgs, err := q.Receive(ctx, 10, wait)
		out <- result{msgs, err}
	}()
	select {
	case <-waiting:
	case r := <-out:
		t.Fatalf("receive returned before blocking: %+v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("receive never blocked")
	}
	return out
}

func await(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second): // a hang guard, far above any real wait
		t.Fatal("long poll did not return")
		return result{}
	}
}

func TestLongPoll(t *testing.T) {
	ctx := context.Background()
	const long = time.Minute // longer than the hang guard: only a wake-up can end these polls in time

	t.Run("wakes on publish", func(t *testing.T) {
		q := New(Options{})
		ch := blockingReceive(t, q, ctx, long)
		if _, err := q.Publish(ctx, queue.Message{Body: []byte("hello"), GroupID: "g"}); err != nil {
			t.Fatal(err)
		}
		r := await(t, ch)
		if r.err != nil || len(r.msgs) != 1 || r.msgs[0].Body != "hello" {
			t.Fatalf("got %+v", r)
		}
	})

	t.Run("wakes when its group is freed by a delete", func(t *testing.T) {
		q := New(Options{})
		for _, b := range []string{"a1", "a2"} {
			if _, err := q.Publish(ctx, queue.Message{Body: []byte(b), GroupID: "A"}); err != nil {
				t.Fatal(err)
			}
		}
		first, err := q.Receive(ctx, 1, 0)
		if err != nil || len(first) != 1 {
			t.Fatalf("receive: %v %v", first, err)
		}
		ch := blockingReceive(t, q, ctx, long)
		if err := q.Delete(ctx, first[0].ReceiptHandle); err != nil {
			t.Fatal(err)
		}
		if r := await(t, ch); r.err != nil || len(r.msgs) != 1 || r.msgs[0].Body != "a2" {
			t.Fatalf("got %+v", r)
		}
	})

	t.Run("wakes on visibility expiry", func(t *testing.T) {
		q := New(Options{VisibilityTimeout: time.Hour})
		if _, err := q.Publish(ctx, queue.Message{Body: []byte("a1"), GroupID: "A"}); err != nil {
			t.Fatal(err)
		}
		first, err := q.Receive(ctx, 1, 0)
		if err != nil || len(first) != 1 {
			t.Fatalf("receive: %v %v", first, err)
		}
		ch := blockingReceive(t, q, ctx, long)
		// Shortened, not zeroed: the poll must wake on its expiry timer.
		if err := q.SetVisibility(ctx, q.ARN(), first[0].ReceiptHandle, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		r := await(t, ch)
		if r.err != nil || len(r.msgs) != 1 || r.msgs[0].Attributes["ApproximateReceiveCount"] != "2" {
			t.Fatalf("got %+v", r)
		}
	})

	t.Run("context end", func(t *testing.T) {
		q := New(Options{})
		cctx, cancel := context.WithCancel(ctx)
		ch := blockingReceive(t, q, cctx, long)
		cancel()
		if r := await(t, ch); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("got %+v, want context.Canceled", r)
		}
	})

	t.Run("close", func(t *testing.T) {
		q := New(Options{})
		ch := blockingReceive(t, q, ctx, long)
		q.Close()
		if r := await(t, ch); !errors.Is(r.err, ErrClosed) {
			t.Fatalf("got %+v, want ErrClosed", r)
		}
		select {
		case <-q.Done():
		default:
			t.Fatal("Done not closed")
		}
		q.Close() // idempotent
	})

	t.Run("wait elapses empty", func(t *testing.T) {
		q := New(Options{})
		msgs, err := q.Receive(ctx, 10, time.Millisecond)
		if err != nil || len(msgs) != 0 {
			t.Fatalf("got %v %v", msgs, err)
		}
	})
}

// Many publishers and consumers at once (run with -race): every message is
// delivered, each group strictly in order, none twice.
func TestConcurrent(t *testing.T) {
	const publishers, groupsPer, perGroup, consumers = 4, 3, 25, 4
	total := publishers * groupsPer * perGroup
	q := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range perGroup {
				for g := range groupsPer {
					body := fmt.Sprintf("p%dg%d:%d", p, g, i)
					if _, err := q.Publish(ctx, queue.Message{Body: []byte(body), GroupID: fmt.Sprintf("p%dg%d", p, g), DedupID: body}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}

	var (
		mu   sync.Mutex
		seen = map[string][]int{}
		done atomic.Int64
	)
	finished := make(chan struct{})
	for range consumers {
		wg.Go(func() {
			for {
				msgs, err := q.Receive(ctx, 10, 50*time.Millisecond)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				for _, m := range msgs {
					grp, n, _ := strings.Cut(m.Body, ":")
					i, _ := strconv.Atoi(n)
					mu.Lock()
					seen[grp] = append(seen[grp], i)
					mu.Unlock()
					if err := q.Delete(ctx, m.ReceiptHandle); err != nil {
						t.Error(err)
					}
					if done.Add(1) == int64(total) {
						close(finished)
					}
				}
				_ = q.Stats()
			}
		})
	}
	select {
	case <-finished:
	case <-ctx.Done():
		t.Fatalf("only %d of %d messages delivered", done.Load(), total)
	}
	q.Close()
	wg.Wait()

	if len(seen) != publishers*groupsPer {
		t.Fatalf("%d groups seen, want %d", len(seen), publishers*groupsPer)
	}
	for g, seq := range seen {
		want := make([]int, perGroup)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(seq, want) {
			t.Errorf("group %s processed in order %v", g, seq)
		}
	}
	if s := q.Stats(); s != (Stats{}) {
		t.Errorf("stats after draining = %+v", s)
	}
}

// Left is what an exiting process loses: visible and in-flight messages of
// every group in send order; deleted and dead-lettered ones are not left.
func TestLeft(t *testing.T) {
	h := newHarness(t, Options{MaxReceives: 1, VisibilityTimeout: time.Minute})
	h.pub("a", "a1")
	h.pub("b", "b1")
	h.pub("a", "a2")
	h.pub("c", "c1")
	h.recv(2, "a1", "a2") // a1, a2 in flight
	h.del("a1")
	h.recv(1, "b1")
	h.clk.Advance(2 * time.Minute) // b1 and a2 expire: dead after one receive
	var bodies []string
	for _, m := range h.q.Left() {
		bodies = append(bodies, m.Body)
		if m.Attributes["MessageGroupId"] == "" || m.MessageId == "" {
			t.Errorf("left message %q without group or id: %+v", m.Body, m)
		}
	}
	if want := []string{"c1"}; !slices.Equal(bodies, want) {
		t.Fatalf("left = %q, want %q", bodies, want)
	}
	h.recv(1, "c1") // in flight now
	h.pub("b", "b2")
	h.pub("a", "a3")
	bodies = bodies[:0]
	for _, m := range h.q.Left() {
		bodies = append(bodies, m.Body)
	}
	if want := []string{"c1", "b2", "a3"}; !slices.Equal(bodies, want) {
		t.Fatalf("left = %q, want %q (send order, in-flight included)", bodies, want)
	}
}
