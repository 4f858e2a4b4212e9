package poller

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// fakeSQS hands out one batch, then long-polls empty; its
// DeleteMessageBatch answers as scripted, recording every call.
type fakeSQS struct {
	batch  []types.Message
	answer func(call int, in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error)

	mu       sync.Mutex
	handed   bool
	received time.Time  // when the batch was handed out
	calls    [][]string // receipt handles of each DeleteMessageBatch call
	at       []time.Time
}

func (f *fakeSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.mu.Lock()
	if !f.handed {
		f.handed, f.received = true, time.Now()
		f.mu.Unlock()
		return &sqs.ReceiveMessageOutput{Messages: f.batch}, nil
	}
	f.mu.Unlock()
	select { // an empty long poll
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(20 * time.Millisecond):
		return &sqs.ReceiveMessageOutput{}, nil
	}
}

func (f *fakeSQS) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	f.mu.Lock()
	n := len(f.calls)
	var hs []string
	for _, e := range in.Entries {
		hs = append(hs, aws.ToString(e.ReceiptHandle))
	}
	f.calls = append(f.calls, hs)
	f.at = append(f.at, time.Now())
	f.mu.Unlock()
	if f.answer == nil {
		return &sqs.DeleteMessageBatchOutput{}, nil
	}
	return f.answer(n, in)
}

// failEntry is a DeleteMessageBatch answer failing the entry for handle.
func failEntry(in *sqs.DeleteMessageBatchInput, handle, code string, senderFault bool) *sqs.DeleteMessageBatchOutput {
	out := &sqs.DeleteMessageBatchOutput{}
	for _, e := range in.Entries {
		if aws.ToString(e.ReceiptHandle) == handle {
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String(code), Message: aws.String("scripted"), SenderFault: senderFault})
		}
	}
	return out
}

var errNet = errors.New("dial tcp: connection reset by peer")

// After an invocation the poller deletes what the handler got through in
// one DeleteMessageBatch, and retries what failed, only what failed, and
// only while the messages are still hidden.
func TestDeleteBatch(t *testing.T) {
	tests := []struct {
		name       string
		visibility time.Duration
		failed     []string // bodies the handler reports failed
		answer     func(call int, in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error)
		want       [][]string // receipt handles per call; nil = check minCalls
		minCalls   int
		log        string // in the poller's log
	}{
		{name: "one call for the batch", want: [][]string{{"h0", "h1", "h2", "h3"}}},
		{name: "what the handler failed is kept", failed: []string{"m1", "m3"}, want: [][]string{{"h0", "h2"}}},
		{name: "a failed call is retried whole",
			answer: func(call int, _ *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
				if call == 0 {
					return nil, errNet
				}
				return &sqs.DeleteMessageBatchOutput{}, nil
			},
			want: [][]string{{"h0", "h1", "h2", "h3"}, {"h0", "h1", "h2", "h3"}}, log: "retrying before the visibility ends"},
		{name: "an entry SQS failed is retried alone",
			answer: func(call int, in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
				if call < 2 {
					return failEntry(in, "h2", "InternalError", false), nil
				}
				return &sqs.DeleteMessageBatchOutput{}, nil
			},
			want: [][]string{{"h0", "h1", "h2", "h3"}, {"h2"}, {"h2"}}},
		{name: "a refused handle is not retried",
			answer: func(_ int, in *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) {
				return failEntry(in, "h1", "ReceiptHandleIsInvalid", true), nil
			},
			want: [][]string{{"h0", "h1", "h2", "h3"}}, log: `"reason":"refused"`},
		{name: "retries stop before the visibility ends", visibility: 2 * time.Second,
			answer:   func(int, *sqs.DeleteMessageBatchInput) (*sqs.DeleteMessageBatchOutput, error) { return nil, errNet },
			minCalls: 3, log: "the visibility ends soon"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSQS{answer: tc.answer}
			for i := range 4 {
				f.batch = append(f.batch, types.Message{
					MessageId: aws.String("id-m" + strconv.Itoa(i)), ReceiptHandle: aws.String("h" + strconv.Itoa(i)),
					Body: aws.String("m" + strconv.Itoa(i)), Attributes: map[string]string{"MessageGroupId": "g" + strconv.Itoa(i)},
				})
			}
			src := NewSQSSource(f, "https://sqs.test/q.fifo", "arn:aws:sqs:us-east-1:123456789012:q.fifo")
			src.Visibility = tc.visibility
			handled := make(chan struct{})
			var once sync.Once
			h := func(_ context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
				defer once.Do(func() { close(handled) })
				var resp events.SQSEventResponse
				for _, r := range ev.Records {
					for _, b := range tc.failed {
						if r.Body == b {
							resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
						}
					}
				}
				return resp, nil
			}
			logs := &testkit.Buffer{}
			stop := start(t, src, h, Options{Concurrency: 1, Log: slog.New(slog.NewJSONHandler(logs, nil))})
			wait(t, handled, "the batch")
			stop() // returns once the batch in hand, deletes included, is done

			f.mu.Lock()
			defer f.mu.Unlock()
			if tc.want != nil {
				if len(f.calls) != len(tc.want) {
					t.Fatalf("DeleteMessageBatch calls %v, want %v", f.calls, tc.want)
				}
				for i := range tc.want {
					if strings.Join(f.calls[i], ",") != strings.Join(tc.want[i], ",") {
						t.Errorf("call %d deleted %v, want %v", i, f.calls[i], tc.want[i])
					}
				}
			}
			if len(f.calls) < tc.minCalls {
				t.Errorf("%d DeleteMessageBatch calls, want at least %d", len(f.calls), tc.minCalls)
			}
			if tc.visibility > 0 {
				if last := f.at[len(f.at)-1]; !last.Before(f.received.Add(tc.visibility)) {
					t.Errorf("a delete started %s after the receive, past the %s visibility", last.Sub(f.received), tc.visibility)
				}
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
		})
	}
}

// On moto: one call deletes the good handles and refuses a bad one, as not
// retryable.
func TestDeleteBatchMoto(t *testing.T) {
	srv := moto.Start(t)
	client := sqs.NewFromConfig(srv.AWSConfig(t))
	url := moto.CreateFIFO(t, client, "delete-batch.fifo")
	for i := range 3 {
		b := "m" + strconv.Itoa(i)
		if _, err := client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(b),
			MessageGroupId: aws.String("g" + b), MessageDeduplicationId: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	src := NewSQSSource(client, url, "arn:aws:sqs:us-east-1:123456789012:delete-batch.fifo")
	msgs, err := src.Receive(t.Context(), 10, time.Second)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("received %d messages, %v; want 3", len(msgs), err)
	}
	failed := src.DeleteBatch(t.Context(), []string{msgs[0].ReceiptHandle, "not-a-handle", msgs[2].ReceiptHandle})
	if f, ok := failed["not-a-handle"]; len(failed) != 1 || !ok || f.Retry || !strings.Contains(f.Err.Error(), "ReceiptHandleIsInvalid") {
		t.Fatalf("failed = %+v; want only the bad handle, not retryable", failed)
	}
	if err := src.Delete(t.Context(), msgs[1].ReceiptHandle); err != nil {
		t.Fatal(err)
	}
	left, err := client.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	if v, nv := left.Attributes["ApproximateNumberOfMessages"], left.Attributes["ApproximateNumberOfMessagesNotVisible"]; v != "0" || nv != "0" {
		t.Errorf("queue not empty: %s visible, %s in flight", v, nv)
	}
}
