package moto

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// moto gap: FIFO order. moto hands a group's messages back out of order
// once a visibility timeout expires, which SQS never does: send m0..m5 in
// one group, receive two, let their visibility expire, and moto returns m1
// to m5 first and m0 after them (a ChangeMessageVisibility to 0 keeps the
// order; one to a longer timeout that then expires does not). Tests on moto
// therefore assert order only where no visibility expires, and say so where
// they rely on it; the order assertions under failures and backoff run on
// the in-process queue. This test fails the day moto keeps the order, so the
// workarounds (grep "moto gap: FIFO order") can go.
func TestFIFOReordersAfterVisibilityTimeout(t *testing.T) {
	srv := Start(t)
	client := sqs.NewFromConfig(srv.AWSConfig(t))
	ctx := t.Context()
	out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String("reorder.fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "VisibilityTimeout": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	url := out.QueueUrl
	var sent []string
	for i := range 6 {
		b := "m" + strconv.Itoa(i)
		sent = append(sent, b)
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: url, MessageBody: aws.String(b),
			MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 2})
	if err != nil || len(first.Messages) != 2 || aws.ToString(first.Messages[0].Body) != "m0" {
		t.Fatalf("first receive: %v, %v; want m0, m1", first, err)
	}
	time.Sleep(1500 * time.Millisecond) // their visibility expires, unchanged
	var got []string
	for range 10 {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10, VisibilityTimeout: 30})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			got = append(got, aws.ToString(m.Body))
			if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) >= len(sent) {
			break
		}
	}
	if slices.Equal(got, sent) {
		t.Fatalf("moto now keeps a FIFO group in order after a visibility timeout (%v): "+
			"remove the workarounds marked \"moto gap: FIFO order\" and this test, and update the moto limits in docs/operations.md", got)
	}
	if i0, i1 := slices.Index(got, "m0"), slices.Index(got, "m1"); i0 < i1 {
		t.Logf("moto reorders differently than recorded: %v", got)
	}
	t.Logf("moto after a visibility timeout: %v (SQS: %v)", got, sent)
}
