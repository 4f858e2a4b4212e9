// Command redrive-dlq moves messages from the dead-letter queue back to the
// main queue, once the cause is fixed (SQIBS token, SQIBS filter, a newer
// dispatcher for a newer envelope version, ...).
//
//	go run ./scripts/redrive-dlq -dlq-url <DeadLetterQueueUrl> -queue-url <QueueUrl> [-dry-run] [-max N]
//
// Each message keeps its MessageGroupId, so the events of one incident stay
// in order, and gets a fresh MessageDeduplicationId (<message id>:redrive:
// <hash of this run's start time>): the original one may still be inside
// SQS's 5-minute deduplication window, which would drop the redriven copy
// silently. A message is deleted from the DLQ only after the main queue took
// it; on the first failure the run stops, and the messages it still holds
// are made visible again, so nothing is lost or reordered.
//
// AWS credentials, region and profile come from the usual AWS environment;
// AWS_ENDPOINT_URL_SQS reaches moto or LocalStack.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

const usage = `usage: redrive-dlq -dlq-url <dead-letter queue URL> -queue-url <main queue URL> [-dry-run] [-max N]

Moves messages from the dead-letter queue back to the main queue, keeping
each message's group (incident order) with a fresh deduplication id, and
deleting each from the DLQ only once the main queue has it. -dry-run lists
the messages (id, group, reason) and moves nothing. The URLs are the stack
outputs DeadLetterQueueUrl and QueueUrl.`

// dlqAPI is what is done on the dead-letter queue (satisfied by *sqs.Client).
type dlqAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// sender is what is done on the main queue.
type sender interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

type options struct {
	dlqURL, queueURL string
	dryRun           bool
	max              int
	wait             time.Duration
	timeout          time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit. Exit codes: 0 done, 1 an AWS call
// failed (what was moved stays moved), 2 usage.
func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("redrive-dlq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dlqURL, "dlq-url", "", "dead-letter queue URL (stack output DeadLetterQueueUrl)")
	fs.StringVar(&o.queueURL, "queue-url", "", "main queue URL (stack output QueueUrl); not needed with -dry-run")
	fs.BoolVar(&o.dryRun, "dry-run", false, "list the messages without moving them")
	fs.IntVar(&o.max, "max", 0, "move (or list) at most N messages; 0 means all")
	fs.DurationVar(&o.wait, "wait", time.Second, "long-poll time of each receive; the run ends at the first empty one")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "time allowed for the whole run")
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case fs.NArg() > 0, o.dlqURL == "", o.queueURL == "" && !o.dryRun:
		fs.Usage()
		return 2
	case o.max < 0 || o.wait < 0 || o.wait > 20*time.Second || o.timeout <= 0:
		fmt.Fprintln(stderr, "redrive-dlq: -max must be >= 0, -wait from 0 to 20s, -timeout positive")
		return 2
	case o.queueURL != "" && o.queueURL == o.dlqURL:
		fmt.Fprintln(stderr, "redrive-dlq: -queue-url and -dlq-url are the same queue")
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "redrive-dlq: load AWS config:", err)
		return 1
	}
	client := sqs.NewFromConfig(cfg)
	r := &redriver{dlq: client, main: client, o: o, stdout: stdout, runID: runID(time.Now())}
	if err := r.run(ctx); err != nil {
		fmt.Fprintln(stderr, "redrive-dlq:", err)
		return 1
	}
	return 0
}

type redriver struct {
	dlq    dlqAPI
	main   sender
	o      options
	stdout io.Writer
	runID  string // the timestamp hash in every new deduplication id

	held []types.Message // received from the DLQ and still hidden there
	done int             // moved, or listed in a dry run
}

// visibility hides a received message from the dispatcher's redrive and
// from this run's next receives, long enough to move a batch.
const visibility = 60

func (r *redriver) run(ctx context.Context) (err error) {
	defer func() {
		// Whatever is still held (listed in a dry run, past -max, or behind
		// a failure) is made visible again now rather than in 60 s.
		if rerr := r.release(context.WithoutCancel(ctx)); rerr != nil && err == nil {
			err = rerr
		}
		r.summary(err)
	}()
	var next []types.Message // received, not yet handled
	for {
		for len(next) > 0 {
			if r.o.max > 0 && r.done >= r.o.max {
				return nil
			}
			m := next[0]
			next = next[1:]
			if r.o.dryRun {
				fmt.Fprintf(r.stdout, "%s\tgroup=%s\treason=%s\n", aws.ToString(m.MessageId), orDash(group(m)), orDash(reason(m)))
				r.done++
				continue
			}
			if err := r.move(ctx, m); err != nil {
				return err
			}
		}
		if r.o.max > 0 && r.done >= r.o.max {
			return nil
		}
		out, err := r.dlq.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(r.o.dlqURL),
			MaxNumberOfMessages:         10,
			VisibilityTimeout:           visibility,
			WaitTimeSeconds:             int32(r.o.wait / time.Second),
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameMessageGroupId},
		})
		if err != nil {
			return fmt.Errorf("receive from %s: %w", r.o.dlqURL, err)
		}
		if len(out.Messages) == 0 {
			return nil
		}
		// Held from now until moved: on a failure, every message not yet
		// moved is released, the later ones of the failed group included,
		// so the group's order survives the next attempt.
		r.held = append(r.held, out.Messages...)
		next = out.Messages
	}
}

// move sends one message to the main queue, then deletes it from the DLQ.
func (r *redriver) move(ctx context.Context, m types.Message) error {
	id := aws.ToString(m.MessageId)
	in := &sqs.SendMessageInput{
		QueueUrl:          aws.String(r.o.queueURL),
		MessageBody:       m.Body,
		MessageAttributes: carried(m.MessageAttributes),
	}
	if strings.HasSuffix(r.o.queueURL, ".fifo") {
		g := group(m)
		if g == "" {
			g = "redrive" // from a standard DLQ: one group, so at least their order holds
		}
		in.MessageGroupId = aws.String(g)
		in.MessageDeduplicationId = aws.String(dedupID(id, r.runID))
	}
	out, err := r.main.SendMessage(ctx, in)
	if err != nil {
		return fmt.Errorf("send %s to %s (it stays in the DLQ): %w", id, r.o.queueURL, err)
	}
	if _, err := r.dlq.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(r.o.dlqURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
		// Now in both queues: a later redrive may deliver it twice, which
		// SQIBS absorbs (a repeated trigger or resolve changes nothing).
		return fmt.Errorf("%s was sent to the main queue as %s but could not be deleted from the DLQ: %w",
			id, aws.ToString(out.MessageId), err)
	}
	r.forget(m)
	r.done++
	fmt.Fprintf(r.stdout, "moved %s\tgroup=%s\treason=%s\t-> %s\n", id, orDash(group(m)), orDash(reason(m)), aws.ToString(out.MessageId))
	return nil
}

func (r *redriver) forget(m types.Message) {
	for i, h := range r.held {
		if aws.ToString(h.ReceiptHandle) == aws.ToString(m.ReceiptHandle) {
			r.held = append(r.held[:i], r.held[i+1:]...)
			return
		}
	}
}

// release makes every held message visible again.
func (r *redriver) release(ctx context.Context) error {
	var errs []error
	for _, m := range r.held {
		_, err := r.dlq.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(r.o.dlqURL), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s (it reappears in %d s): %w", aws.ToString(m.MessageId), visibility, err))
		}
	}
	r.held = nil
	return errors.Join(errs...)
}

func (r *redriver) summary(err error) {
	switch {
	case r.o.dryRun:
		fmt.Fprintf(r.stdout, "%d message(s) in the DLQ would be moved (dry run: nothing changed)\n", r.done)
		if strings.HasSuffix(r.o.dlqURL, ".fifo") {
			fmt.Fprintln(r.stdout, "note: a FIFO queue hands out no more of a group while some of it is in flight, so a group may list only its first 10 messages")
		}
	case err != nil:
		fmt.Fprintf(r.stdout, "moved %d message(s) before stopping; the rest stay in the DLQ\n", r.done)
	default:
		fmt.Fprintf(r.stdout, "moved %d message(s) from %s to %s\n", r.done, r.o.dlqURL, r.o.queueURL)
	}
}

// dedupID is the fresh MessageDeduplicationId of a redriven message:
// "<message id>:redrive:<run id>", kept within SQS's 128 characters.
func dedupID(messageID, runID string) string {
	return queue.SafeFIFOID(messageID + ":redrive:" + runID)
}

// runID is a short hash of the run's start time: the same message redriven
// twice (after a second failure) gets a different deduplication id.
func runID(start time.Time) string {
	sum := sha256.Sum256([]byte(start.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:8])
}

// carried are the message attributes kept on the way back: all but the
// reason, which described the failure this redrive is meant to undo.
func carried(in map[string]types.MessageAttributeValue) map[string]types.MessageAttributeValue {
	out := make(map[string]types.MessageAttributeValue, len(in))
	for k, v := range in {
		if k != "reason" {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func group(m types.Message) string {
	return m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
}

func reason(m types.Message) string {
	if a, ok := m.MessageAttributes["reason"]; ok {
		return aws.ToString(a.StringValue)
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
