package poller

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// SQSSource against moto: two groups, one message failing once. It comes
// back (its retry delay set to 0 through queue.SQSVisibility, as the
// dispatcher sets its backoff), everything else is deleted, and the queue
// ends empty.
//
// moto gap: FIFO order (internal/testkit/moto): a delay above 0 that
// expires would let moto hand a2 out before a1; SQS would not.
func TestSQSSourceMoto(t *testing.T) {
	srv := moto.Start(t)
	ctx := context.Background()
	client := sqs.NewFromConfig(srv.AWSConfig(t))

	created, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String("bridge-test.fifo"),
		Attributes: map[string]string{
			"FifoQueue":         "true",
			"VisibilityTimeout": "30",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	url := aws.ToString(created.QueueUrl)
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		t.Fatal(err)
	}
	arn := attrs.Attributes["QueueArn"]

	send := func(group, body string, mattrs map[string]types.MessageAttributeValue) {
		t.Helper()
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{
			QueueUrl: aws.String(url), MessageBody: aws.String(body),
			MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(body),
			MessageAttributes: mattrs,
		}); err != nil {
			t.Fatal(err)
		}
	}
	send("A", "a1", map[string]types.MessageAttributeValue{"origin": {DataType: aws.String("String"), StringValue: aws.String("test")}})
	send("A", "a2", nil)
	send("B", "b1", nil)
	send("B", "b2", nil)

	vis := &queue.SQSVisibility{API: client}
	var (
		mu        sync.Mutex
		delivered []events.SQSMessage
		succeeded []string
		a1Done    bool
	)
	allDone := make(chan struct{})
	h := func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		var resp events.SQSEventResponse
		for _, r := range ev.Records {
			delivered = append(delivered, r)
			// a1 fails on its first delivery; a2 is held back until a1 is done.
			fail := (r.Body == "a1" && r.Attributes["ApproximateReceiveCount"] == "1") || (r.Body == "a2" && !a1Done)
			if fail {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
				if err := vis.SetVisibility(ctx, r.EventSourceARN, r.ReceiptHandle, 0); err != nil {
					t.Errorf("set visibility of %s: %v", r.Body, err)
				}
				continue
			}
			if r.Body == "a1" {
				a1Done = true
			}
			succeeded = append(succeeded, r.Body)
			if len(succeeded) == 4 {
				close(allDone)
			}
		}
		return resp, nil
	}

	src := NewSQSSource(client, url, arn)
	stop := start(t, src, h, Options{Wait: time.Second, Concurrency: 1})
	select {
	case <-allDone:
	case <-time.After(30 * time.Second): // hang guard
		stop()
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("not all messages succeeded; succeeded %q", succeeded)
	}
	stop()

	mu.Lock()
	defer mu.Unlock()
	a1Receives := 0
	for _, r := range delivered {
		sum := md5.Sum([]byte(r.Body))
		switch {
		case r.EventSource != "aws:sqs", r.EventSourceARN != arn, r.AWSRegion != "us-east-1",
			r.Md5OfBody != hex.EncodeToString(sum[:]), r.MessageId == "", r.ReceiptHandle == "":
			t.Errorf("record not as Lambda builds it: %+v", r)
		}
		for _, k := range []string{"MessageGroupId", "MessageDeduplicationId", "ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"} {
			if r.Attributes[k] == "" {
				t.Errorf("%s: attribute %s missing (have %v)", r.Body, k, r.Attributes)
			}
		}
		if r.Body == "a1" {
			a1Receives++
			if n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"]); n != a1Receives {
				t.Errorf("a1 delivery %d: ApproximateReceiveCount %d", a1Receives, n)
			}
			if ma := r.MessageAttributes["origin"]; ma.DataType != "String" || aws.ToString(ma.StringValue) != "test" {
				t.Errorf("a1: message attribute origin = %+v", ma)
			}
		}
	}
	if a1Receives < 2 {
		t.Errorf("a1 delivered %d times, want it back after its failure", a1Receives)
	}

	left, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, nv := left.Attributes["ApproximateNumberOfMessages"], left.Attributes["ApproximateNumberOfMessagesNotVisible"]; v != "0" || nv != "0" {
		t.Errorf("queue not empty: %s visible, %s in flight", v, nv)
	}
}
