package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// An incident's events fail (SQIBS 503) for longer than RETRY_FOR, on a
// simulated clock: they are retried inside the window, then dead-lettered
// in order with reason retry_window_exceeded, and once SQIBS is back this
// command brings them back to the queue, where they are delivered in order.
func TestRetryWindowExceededThenRedriven(t *testing.T) {
	srv := moto.Start(t)
	client := sqs.NewFromConfig(srv.AWSConfig(t))
	ctx := t.Context()
	mainURL := moto.CreateFIFO(t, client, "buildkite-sqibs-events.fifo")
	dlqURL := moto.CreateFIFO(t, client, "buildkite-sqibs-dead-letter.fifo")
	src := poller.NewSQSSource(client, mainURL, "arn:aws:sqs:us-east-1:123456789012:buildkite-sqibs-events.fifo")

	fixture := testkit.Fixture(t, "build_finished_failed.json")
	pub := queue.NewSQSPublisher(client, mainURL)
	for _, b := range []struct {
		number int64
		state  string
	}{{1, "failed"}, {2, "passed"}, {3, "failed"}} {
		p, err := buildkite.Parse(fixture, "")
		if err != nil {
			t.Fatal(err)
		}
		p.Build.Number, p.Build.State, p.Build.ID = b.number, b.state, fmt.Sprintf("build-%d", b.number)
		m, err := queue.NewMessage(p, "acme/deploy-api/main", fmt.Sprintf("req-%d", b.number), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	up := false
	var delivered []string
	sqibsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var pl incident.Payload
		_ = json.NewDecoder(r.Body).Decode(&pl)
		delivered = append(delivered, fmt.Sprintf("%s #%d", pl.Event.Status, pl.Event.BuildNumber))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"x","triggered":{"created":true},"resolved":{}}`)
	}))
	defer sqibsSrv.Close()
	sc, err := sqibs.New(sqibs.Config{URL: sqibsSrv.URL + "/v1/process", Auth: "header", Timeout: 2 * time.Second}, secret.Literal("sqibs-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := testkit.NewClock(time.Now().Add(time.Hour)) // the events are an hour old
	logs := &testkit.Buffer{}
	h := dispatcher.New(dispatcher.Config{
		Rules: incident.DefaultRules(), Now: clock.Now,
		// Sub-second backoffs reach SQS as a visibility of 0. moto gap:
		// FIFO order (internal/testkit/moto): one that expired would let
		// moto reorder the group; SQS would not.
		BackoffBase: time.Millisecond,
	}, sc, &queue.SQSVisibility{API: client}, &queue.SQSDeadLetter{API: client, URL: dlqURL},
		slog.New(slog.NewJSONHandler(logs, nil)), nil)

	// One pass as the event source mapping makes it: receive a batch,
	// handle it, delete what it did not report failed.
	pass := func() events.SQSEventResponse {
		t.Helper()
		msgs, err := src.Receive(ctx, 10, time.Second)
		if err != nil || len(msgs) != 3 {
			t.Fatalf("receive: %d messages, %v; want the group's 3", len(msgs), err)
		}
		resp, err := h.Handle(ctx, events.SQSEvent{Records: msgs})
		if err != nil {
			t.Fatal(err)
		}
		var done []string
		for _, m := range msgs {
			if !slices.ContainsFunc(resp.BatchItemFailures, func(f events.SQSBatchItemFailure) bool { return f.ItemIdentifier == m.MessageId }) {
				done = append(done, m.ReceiptHandle)
			}
		}
		if failed := src.DeleteBatch(ctx, done); len(failed) != 0 {
			t.Fatalf("delete: %v", failed)
		}
		return resp
	}

	// Inside RETRY_FOR: the head fails, the rest is held back; nothing is
	// dead-lettered.
	if resp := pass(); len(resp.BatchItemFailures) != 3 {
		t.Fatalf("an hour old: %d failures reported, want all 3 back on the queue", len(resp.BatchItemFailures))
	}
	if n := strings.Count(logs.String(), "retry_window_exceeded"); n != 0 {
		t.Fatalf("dead-lettered inside RETRY_FOR:\n%s", logs.String())
	}
	// A day later they still fail: each goes to the DLQ at its failure, in
	// order, with one ERROR line each.
	clock.Advance(24 * time.Hour)
	if resp := pass(); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("25 h old: %d failures reported, want all 3 dead-lettered", len(resp.BatchItemFailures))
	}
	if n := strings.Count(logs.String(), `"level":"ERROR","msg":"SQIBS delivery failed for longer than RETRY_FOR`); n != 3 {
		t.Errorf("%d ERROR lines for 3 events past RETRY_FOR:\n%s", n, logs.String())
	}

	code, out, errOut := runCmd(t, "-dlq-url", dlqURL, "-dry-run")
	if code != 0 || strings.Count(out, "group=acme/deploy-api/main\treason=retry_window_exceeded\n") != 3 {
		t.Fatalf("dry run: exit %d, %s%s; want the 3 listed with reason retry_window_exceeded", code, out, errOut)
	}
	// SQIBS is back: redrive, and the next pass delivers them in order.
	mu.Lock()
	up = true
	mu.Unlock()
	if code, out, errOut := runCmd(t, "-dlq-url", dlqURL, "-queue-url", mainURL); code != 0 || !strings.Contains(out, "moved 3 message(s)") {
		t.Fatalf("redrive: exit %d, %s%s", code, out, errOut)
	}
	if resp := pass(); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("after the redrive: %d failures", len(resp.BatchItemFailures))
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"FAILED #1", "PASSED #2", "FAILED #3"}; !slices.Equal(delivered, want) {
		t.Errorf("SQIBS got %v, want %v", delivered, want)
	}
	for _, u := range []string{mainURL, dlqURL} {
		a, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(u),
			AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
		if err != nil {
			t.Fatal(err)
		}
		if a.Attributes["ApproximateNumberOfMessages"] != "0" || a.Attributes["ApproximateNumberOfMessagesNotVisible"] != "0" {
			t.Errorf("%s not empty: %v", u, a.Attributes)
		}
	}
}
