package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
)

// SQSAPI is the one SQS call the publisher makes (satisfied by *sqs.Client).
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// ErrUnavailable means the message could not be queued within the retry
// budget, or SQS refused it. The receiver answers 503 for it (DESIGN §3).
var ErrUnavailable = errors.New("queue unavailable")

// Retry budget. Buildkite waits about 5 s for an answer and never retries,
// so the whole publish must end well inside that: DESIGN §3 asks for < 3 s.
//
// A slow queue is not a failing one: SendMessage may take seconds and still
// land, and an attempt abandoned at its own timeout would turn a delivered
// event into a 503. So an attempt may use all that is left of the budget,
// and only fast failures (throttling, 5xx, a refused connection) are
// retried, while at least minAttempt is left: a healthy SendMessage takes
// tens of milliseconds.
const (
	publishBudget = 2700 * time.Millisecond // all attempts and back-offs together
	minAttempt    = 250 * time.Millisecond  // no retry with less left
	maxAttempts   = 4                       // back-offs ~50, ~100, ~200 ms between them
	baseBackoff   = 50 * time.Millisecond
)

// SQSPublisher sends messages to one SQS FIFO queue with a bounded retry
// budget of its own. Retrying is safe: every attempt carries the same
// MessageDeduplicationId, so SQS keeps at most one copy.
type SQSPublisher struct {
	api      SQSAPI
	queueURL string

	// Test seams; NewSQSPublisher sets the production values.
	budget, minAttempt time.Duration
	attemptCap         time.Duration // 0: an attempt may use the whole rest of the budget
	maxAttempts        int
	sleep              func(context.Context, time.Duration) error
}

// NewSQSPublisher returns a publisher for the FIFO queue at queueURL.
// Build api with SQSOptions so the SDK does not retry underneath.
func NewSQSPublisher(api SQSAPI, queueURL string) *SQSPublisher {
	return &SQSPublisher{
		api:         api,
		queueURL:    queueURL,
		budget:      publishBudget,
		minAttempt:  minAttempt,
		maxAttempts: maxAttempts,
		sleep:       sleepCtx,
	}
}

// SQSOptions turns off the SDK's own retryer (one attempt per call) so that
// Publish's budget is the only one: the SDK default of 3 attempts with up to
// 20 s back-off per call would multiply it. Pass it to sqs.NewFromConfig.
func SQSOptions(o *sqs.Options) {
	o.RetryMaxAttempts = 1
}

// Publish sends m and returns the SQS MessageId. The group id is made safe
// for SQS first (see SafeFIFOID). One attempt may take the whole 2.7 s
// budget (less if ctx ends sooner); throttling, 5xx and network errors that
// come back with at least 250 ms of it left are retried, client errors are
// not. Every failure wraps ErrUnavailable, and may still have been queued
// (an attempt cut by the budget can land later): the same message sent
// again is dropped by its MessageDeduplicationId. The error names the queue
// but never carries the message body.
func (p *SQSPublisher) Publish(ctx context.Context, m Message) (string, error) {
	in := &sqs.SendMessageInput{
		QueueUrl:       aws.String(p.queueURL),
		MessageBody:    aws.String(string(m.Body)),
		MessageGroupId: aws.String(SafeFIFOID(m.GroupID)),
	}
	if m.DedupID != "" {
		// An empty id is left out rather than hashed: a made-up constant
		// would silently drop every other message without one.
		in.MessageDeduplicationId = aws.String(SafeFIFOID(m.DedupID))
	}
	if err := ctx.Err(); err != nil {
		return "", p.fail(0, "not sent", err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.budget)
	defer cancel()

	for attempt := 1; ; attempt++ {
		actx, acancel := ctx, context.CancelFunc(func() {})
		if p.attemptCap > 0 {
			actx, acancel = context.WithTimeout(ctx, p.attemptCap)
		}
		out, err := p.api.SendMessage(actx, in)
		attemptTimedOut := actx.Err() != nil
		acancel()
		if err == nil {
			if out == nil {
				return "", nil
			}
			return aws.ToString(out.MessageId), nil
		}
		switch {
		case ctx.Err() != nil:
			return "", p.fail(attempt, "retry budget or caller context ended", err)
		case !attemptTimedOut && !retryable(err):
			return "", p.fail(attempt, "permanent error", err)
		case attempt >= p.maxAttempts:
			return "", p.fail(attempt, "retries exhausted", err)
		}
		d := backoff(attempt)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d+p.minAttempt {
			return "", p.fail(attempt, "too little of the retry budget left", err)
		}
		if serr := p.sleep(ctx, d); serr != nil {
			return "", p.fail(attempt, "retry budget or caller context ended", err)
		}
	}
}

func (p *SQSPublisher) fail(attempts int, why string, err error) error {
	return fmt.Errorf("%w: sqs send to %s: %s after %d attempt(s): %w", ErrUnavailable, p.queueURL, why, attempts, err)
}

// retryable says whether err, from one SendMessage attempt, is transient.
// The SDK's own classification (connection errors, 500/502/503/504,
// unmodelled 429, throttling and request-timeout codes) is the base; on top
// of it any server fault or 5xx, and SQS's KMS throttling, are transient.
// Everything else (InvalidParameterValue, AccessDenied, QueueDoesNotExist,
// KmsAccessDenied, client-side validation, ...) will not get better by
// trying again within 3 s.
func retryable(err error) bool {
	switch retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) {
	case aws.TrueTernary:
		return true
	case aws.FalseTernary:
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if ae.ErrorFault() == smithy.FaultServer {
			return true
		}
		switch ae.ErrorCode() {
		case "KmsThrottled", "KMS.ThrottlingException", "ServiceUnavailable", "InternalError", "InternalFailure":
			return true
		}
	}
	var hs interface{ HTTPStatusCode() int }
	if errors.As(err, &hs) {
		s := hs.HTTPStatusCode()
		return s >= 500 || s == 429
	}
	return false
}

// backoff is ~50, ~100, ~200 ms for attempts 1, 2, 3, each with ±25% jitter
// so that concurrent receivers do not retry in lock-step.
func backoff(attempt int) time.Duration {
	d := baseBackoff << min(attempt-1, 8) // capped: only tests lift maxAttempts
	return d*3/4 + rand.N(d/2)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// FIFO id limits: SQS accepts MessageGroupId and MessageDeduplicationId of 1
// to 128 characters from a-z, A-Z, 0-9 and !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~,
// i.e. printable ASCII without the space.
const (
	maxFIFOIDLen = 128
	fifoHashLen  = 16 // hex digits of SHA-256 kept: 64 bits, collisions are not a concern
)

// SafeFIFOID returns id unchanged when SQS accepts it as a MessageGroupId
// (1–128 characters, each printable ASCII other than space). Otherwise, e.g.
// for an incident id with a branch name holding spaces or non-ASCII letters,
// or one longer than 128 characters, it returns a readable prefix (the id
// with each disallowed character replaced by '_', cut to fit) followed by
// "~" and the first 16 hex digits of the SHA-256 of the whole original id.
// The result is deterministic, so all events of one incident still share a
// group, and the hash keeps distinct ids in distinct groups.
func SafeFIFOID(id string) string {
	if id != "" && len(id) <= maxFIFOIDLen && fifoSafe(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	suffix := "~" + hex.EncodeToString(sum[:fifoHashLen/2])
	limit := maxFIFOIDLen - len(suffix)
	var b strings.Builder
	b.Grow(maxFIFOIDLen)
	for _, r := range id { // invalid UTF-8 bytes come as RuneError: replaced too
		if b.Len() >= limit {
			break
		}
		if r >= '!' && r <= '~' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	b.WriteString(suffix)
	return b.String()
}

func fifoSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '!' || c > '~' {
			return false
		}
	}
	return true
}
