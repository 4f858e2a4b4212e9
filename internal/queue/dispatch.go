package queue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// VisibilityAPI is what SQSVisibility calls (satisfied by *sqs.Client).
type VisibilityAPI interface {
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
}

// SQSVisibility sets a received message's visibility timeout. The event
// source mapping names the queue only by ARN, so the URL is looked up once
// per ARN (GetQueueUrl also honours AWS_ENDPOINT_URL_SQS, unlike building
// the URL by hand).
type SQSVisibility struct {
	API  VisibilityAPI
	mu   sync.Mutex
	urls map[string]string
}

// SetVisibility implements dispatcher.Visibility.
func (v *SQSVisibility) SetVisibility(ctx context.Context, sourceARN, receiptHandle string, timeout time.Duration) error {
	url, err := v.url(ctx, sourceARN)
	if err != nil {
		return err
	}
	secs := int32(timeout / time.Second)
	if secs > 43200 { // SQS maximum
		secs = 43200
	}
	_, err = v.API.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(url), ReceiptHandle: aws.String(receiptHandle), VisibilityTimeout: secs,
	})
	if err != nil {
		return fmt.Errorf("change message visibility on %s: %w", url, err)
	}
	return nil
}

func (v *SQSVisibility) url(ctx context.Context, arn string) (string, error) {
	v.mu.Lock()
	u, ok := v.urls[arn]
	v.mu.Unlock()
	if ok {
		return u, nil
	}
	// arn:aws:sqs:<region>:<account>:<name>
	parts := strings.Split(arn, ":")
	if len(parts) != 6 || parts[2] != "sqs" {
		return "", fmt.Errorf("event source %q is not an SQS queue ARN", arn)
	}
	out, err := v.API.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(parts[5]), QueueOwnerAWSAccountId: aws.String(parts[4])})
	if err != nil {
		return "", fmt.Errorf("look up queue URL of %s: %w", arn, err)
	}
	v.mu.Lock()
	if v.urls == nil {
		v.urls = map[string]string{}
	}
	v.urls[arn] = aws.ToString(out.QueueUrl)
	v.mu.Unlock()
	return aws.ToString(out.QueueUrl), nil
}

// SQSDeadLetter sends messages that can never succeed to the DLQ (a FIFO
// queue), keeping their group so a redrive restores the order, with the
// reason and origin as message attributes.
type SQSDeadLetter struct {
	API SQSAPI
	URL string
}

// DeadLetter implements dispatcher.DeadLetters.
func (d *SQSDeadLetter) DeadLetter(ctx context.Context, m events.SQSMessage, reason string) error {
	in := &sqs.SendMessageInput{
		QueueUrl:    aws.String(d.URL),
		MessageBody: aws.String(m.Body),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"reason":              {DataType: aws.String("String"), StringValue: aws.String(reason)},
			"original_message_id": {DataType: aws.String("String"), StringValue: aws.String(m.MessageId)},
		},
	}
	if strings.HasSuffix(d.URL, ".fifo") {
		group := m.Attributes["MessageGroupId"]
		if group == "" {
			group = "dead-letter"
		}
		in.MessageGroupId = aws.String(group)
		in.MessageDeduplicationId = aws.String(m.MessageId)
	}
	if _, err := d.API.SendMessage(ctx, in); err != nil {
		return fmt.Errorf("send to dead-letter queue %s: %w", d.URL, err)
	}
	return nil
}
