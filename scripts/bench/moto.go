package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// motoServer is a moto_server (local AWS emulator) this command started,
// with the SQS calls the RSS section makes on it.
type motoServer struct{ *moto.Process }

// startMoto starts moto_server and waits for it to answer; moto.ErrAbsent
// means the receiver's RSS and the state calls cannot be measured.
func startMoto(ctx context.Context) (*motoServer, error) {
	p, err := moto.Launch(ctx, nil)
	if err != nil {
		return nil, err // "moto: …" already, or ErrAbsent as the notes print it
	}
	return &motoServer{p}, nil
}

// sqsClient reaches moto's SQS.
func (m *motoServer) sqsClient() *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(m.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("bench", "bench", ""),
	})
}

// fifoQueue creates a FIFO queue like the template's and returns its URL.
func (m *motoServer) fifoQueue(ctx context.Context, name string) (string, error) {
	if !strings.HasSuffix(name, ".fifo") {
		name += ".fifo"
	}
	out, err := m.sqsClient().CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String(name),
		Attributes: map[string]string{"FifoQueue": "true", "VisibilityTimeout": "60"},
	})
	if err != nil {
		return "", fmt.Errorf("moto: create queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// drain counts the messages in a queue, then purges it.
func (m *motoServer) drain(ctx context.Context, queueURL string) (int, error) {
	c := m.sqsClient()
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(queueURL), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages},
	})
	if err != nil {
		return 0, fmt.Errorf("moto: count messages: %w", err)
	}
	v := attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)]
	count, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("moto: message count %q: %w", v, err)
	}
	if _, err := c.PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: aws.String(queueURL)}); err != nil {
		return 0, fmt.Errorf("moto: purge queue: %w", err)
	}
	return count, nil
}
