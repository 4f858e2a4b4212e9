package poller

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// SQSAPI is what SQSSource calls (satisfied by *sqs.Client).
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// SQSWait is SQS's longest long poll, SQSSource's default wait.
const SQSWait = 20 * time.Second

// SQSSource polls a real SQS queue and hands out records exactly as the
// Lambda event source mapping builds them. Retry delays go through
// queue.SQSVisibility, which takes the same ARN.
type SQSSource struct {
	api              SQSAPI
	url, arn, region string

	// Visibility is the queue's visibility timeout: the poller retries a
	// failed delete until shortly before it ends. Zero means SQS's
	// default, 30 s.
	Visibility time.Duration
}

// sqsDefaultVisibility is a queue's visibility timeout unless set.
const sqsDefaultVisibility = 30 * time.Second

// NewSQSSource polls the queue at queueURL; queueARN becomes every record's
// eventSourceARN (and its region the record's awsRegion).
func NewSQSSource(api SQSAPI, queueURL, queueARN string) *SQSSource {
	s := &SQSSource{api: api, url: queueURL, arn: queueARN}
	if p := strings.Split(queueARN, ":"); len(p) == 6 {
		s.region = p[3]
	}
	return s
}

// DefaultWait is the long-poll wait Run uses when Options.Wait is zero.
func (s *SQSSource) DefaultWait() time.Duration { return SQSWait }

// Receive long-polls ReceiveMessage for up to wait (rounded up to whole
// seconds, at most 20) and up to n (1..10) messages.
func (s *SQSSource) Receive(ctx context.Context, n int, wait time.Duration) ([]events.SQSMessage, error) {
	secs := min(max(int32(math.Ceil(wait.Seconds())), 0), int32(SQSWait/time.Second))
	out, err := s.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(s.url),
		MaxNumberOfMessages:         int32(min(max(n, 1), 10)),
		WaitTimeSeconds:             secs,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		MessageAttributeNames:       []string{"All"},
	})
	if err != nil {
		return nil, fmt.Errorf("receive from %s: %w", s.url, err)
	}
	recs := make([]events.SQSMessage, 0, len(out.Messages))
	for _, m := range out.Messages {
		recs = append(recs, s.record(m))
	}
	return recs, nil
}

// record converts m as Lambda does for its SQS event.
func (s *SQSSource) record(m types.Message) events.SQSMessage {
	attrs := make(map[string]string, len(m.Attributes))
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	mattrs := make(map[string]events.SQSMessageAttribute, len(m.MessageAttributes))
	for k, v := range m.MessageAttributes {
		mattrs[k] = events.SQSMessageAttribute{
			StringValue:      v.StringValue,
			BinaryValue:      v.BinaryValue,
			StringListValues: v.StringListValues,
			BinaryListValues: v.BinaryListValues,
			DataType:         aws.ToString(v.DataType),
		}
	}
	return events.SQSMessage{
		MessageId:              aws.ToString(m.MessageId),
		ReceiptHandle:          aws.ToString(m.ReceiptHandle),
		Body:                   aws.ToString(m.Body),
		Md5OfBody:              aws.ToString(m.MD5OfBody),
		Md5OfMessageAttributes: aws.ToString(m.MD5OfMessageAttributes),
		Attributes:             attrs,
		MessageAttributes:      mattrs,
		EventSourceARN:         s.arn,
		EventSource:            "aws:sqs",
		AWSRegion:              s.region,
	}
}

// VisibilityTimeout is how long a received message stays hidden.
func (s *SQSSource) VisibilityTimeout() time.Duration {
	if s.Visibility > 0 {
		return s.Visibility
	}
	return sqsDefaultVisibility
}

// Delete deletes a received message (a batch of one).
func (s *SQSSource) Delete(ctx context.Context, receiptHandle string) error {
	if f, ok := s.DeleteBatch(ctx, []string{receiptHandle})[receiptHandle]; ok {
		return f.Err
	}
	return nil
}

// DeleteBatch deletes received messages with one DeleteMessageBatch call
// per 10 (SQS's limit; a batch from Receive is never larger). A failed call
// fails every entry retryably; an entry SQS refuses as the sender's fault
// (an invalid or expired receipt handle) is not retryable.
func (s *SQSSource) DeleteBatch(ctx context.Context, receiptHandles []string) map[string]DeleteFailure {
	failed := map[string]DeleteFailure{}
	for chunk := range slices.Chunk(receiptHandles, 10) {
		in := &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.url)}
		for i, h := range chunk {
			in.Entries = append(in.Entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h)})
		}
		out, err := s.api.DeleteMessageBatch(ctx, in)
		if err != nil {
			for _, h := range chunk {
				failed[h] = DeleteFailure{Err: fmt.Errorf("delete batch from %s: %w", s.url, err), Retry: true}
			}
			continue
		}
		for _, e := range out.Failed {
			i, err := strconv.Atoi(aws.ToString(e.Id))
			if err != nil || i < 0 || i >= len(chunk) {
				continue // not an id we sent
			}
			failed[chunk[i]] = DeleteFailure{
				Err:   fmt.Errorf("delete from %s: %s: %s", s.url, aws.ToString(e.Code), aws.ToString(e.Message)),
				Retry: !e.SenderFault,
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return failed
}
