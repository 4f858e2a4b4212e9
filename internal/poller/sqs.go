package poller

import (
	"context"
	"fmt"
	"math"
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
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

// SQSWait is SQS's longest long poll, SQSSource's default wait.
const SQSWait = 20 * time.Second

// SQSSource polls a real SQS queue and hands out records exactly as the
// Lambda event source mapping builds them. Retry delays go through
// queue.SQSVisibility, which takes the same ARN.
type SQSSource struct {
	api              SQSAPI
	url, arn, region string
}

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

// Delete deletes a received message.
func (s *SQSSource) Delete(ctx context.Context, receiptHandle string) error {
	_, err := s.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(s.url), ReceiptHandle: aws.String(receiptHandle)})
	if err != nil {
		return fmt.Errorf("delete from %s: %w", s.url, err)
	}
	return nil
}
