// Package poller does locally what Lambda's SQS event source mapping does
// in AWS: it long-polls a queue, invokes the handler with a batch as an
// events.SQSEvent, and deletes what the handler did not report failed
// (ReportBatchItemFailures). `make dev` runs the dispatcher's Lambda handler
// through it, over the in-process queue or a real SQS queue.
package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/callgoose/buildkite-sqibs/internal/uuid"
)

// Source is a queue to poll. *memqueue.Queue and *SQSSource satisfy it.
//
// A Source may also have Done() <-chan struct{}: Run then stops once it is
// closed, as memqueue.Queue's is by Close. One with DefaultWait()
// time.Duration sets the long-poll wait when Options.Wait is zero.
type Source interface {
	Receive(ctx context.Context, max int, wait time.Duration) ([]events.SQSMessage, error)
	Delete(ctx context.Context, receiptHandle string) error
}

// BatchDeleter is a Source that deletes many messages in one call, as SQS's
// DeleteMessageBatch does (*SQSSource). It returns the receipt handles it
// did not delete. The poller retries those marked Retry until shortly
// before their visibility ends; a Source with VisibilityTimeout()
// time.Duration says when that is.
type BatchDeleter interface {
	DeleteBatch(ctx context.Context, receiptHandles []string) map[string]DeleteFailure
}

// DeleteFailure is why one message was not deleted.
type DeleteFailure struct {
	Err   error
	Retry bool // a later call may still delete it
}

// Handler is a Lambda SQS handler; (*dispatcher.Handler).Handle is one.
type Handler func(context.Context, events.SQSEvent) (events.SQSEventResponse, error)

// Options tunes Run; zero values take the defaults.
type Options struct {
	BatchSize     int           // records per invocation, ≤ 10; default 10
	Wait          time.Duration // long-poll wait; default the Source's DefaultWait, else 1 s
	Concurrency   int           // parallel receive loops; default 2
	InvokeTimeout time.Duration // deadline of one invocation, like the Lambda timeout; default 30 s
	Log           *slog.Logger  // default slog.Default()
	FunctionName  string        // in the invocation's lambdacontext; default "local"
}

// Defaults.
const (
	DefaultBatchSize     = 10
	DefaultWait          = time.Second
	DefaultConcurrency   = 2
	DefaultInvokeTimeout = 30 * time.Second
)

// Back-off after a failed Receive, so a broken queue is not hammered.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
	// deleteTimeout bounds the deletes after an invocation; they run even
	// when ctx has ended, to finish the batch in hand.
	deleteTimeout = 10 * time.Second
	// A failed batch delete is retried (one call per attempt, each at most
	// deleteAttempt long) until deleteMargin before the messages'
	// visibility ends: a delete landing later could not stop a
	// redelivery, which SQIBS would see as a repeated event.
	deleteAttempt   = 5 * time.Second
	deleteMargin    = time.Second
	deleteRetryBase = 100 * time.Millisecond
	deleteRetryMax  = 2 * time.Second
)

// Run polls src and invokes h until ctx ends (or src reports Done), then
// waits for the batches in hand to finish — handler and deletes — and
// returns nil. The handler's context does not end with ctx: it has its own
// InvokeTimeout deadline, as a Lambda invocation does.
//
// After each invocation: when h returns an error (or panics) nothing is
// deleted, so the whole batch comes back after its visibility timeout. Else
// every record not listed in BatchItemFailures is deleted; a listed id that
// is empty or not in the batch makes the whole batch failed, as Lambda does.
func Run(ctx context.Context, src Source, h Handler, o Options) error {
	if src == nil || h == nil {
		return errors.New("poller: nil source or handler")
	}
	o = o.withDefaults(src)
	var done <-chan struct{}
	if d, ok := src.(interface{ Done() <-chan struct{} }); ok {
		done = d.Done()
	}
	p := &poller{src: src, h: h, o: o, done: done}
	var wg sync.WaitGroup
	for i := range o.Concurrency {
		wg.Go(func() { p.loop(ctx, i) })
	}
	wg.Wait()
	return nil
}

func (o Options) withDefaults(src Source) Options {
	if o.BatchSize <= 0 || o.BatchSize > 10 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
		if d, ok := src.(interface{ DefaultWait() time.Duration }); ok {
			o.Wait = d.DefaultWait()
		}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.InvokeTimeout <= 0 {
		o.InvokeTimeout = DefaultInvokeTimeout
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.FunctionName == "" {
		o.FunctionName = "local"
	}
	return o
}

type poller struct {
	src  Source
	h    Handler
	o    Options
	done <-chan struct{}
}

func (p *poller) stopped(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	select {
	case <-p.done: // nil when the source has no Done: never ready
		return true
	default:
		return false
	}
}

func (p *poller) loop(ctx context.Context, worker int) {
	log := p.o.Log.With("poller", worker)
	retry := minRetry
	for !p.stopped(ctx) {
		msgs, err := p.src.Receive(ctx, p.o.BatchSize, p.o.Wait)
		received := time.Now() // their visibility started a little before
		if err != nil {
			if p.stopped(ctx) {
				return
			}
			log.Warn("receive failed: retrying", "error", err.Error(), "retry_in", retry)
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
			case <-p.done:
			case <-t.C:
			}
			t.Stop()
			retry = min(retry*2, maxRetry)
			continue
		}
		retry = minRetry
		if len(msgs) > 0 {
			p.invoke(ctx, msgs, received, log)
		}
	}
}

// invoke runs one batch to the end, whatever happens to ctx meanwhile.
func (p *poller) invoke(ctx context.Context, msgs []events.SQSMessage, received time.Time, log *slog.Logger) {
	requestID := uuid.New()
	log = log.With("function_request_id", requestID, "records", len(msgs))
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.o.InvokeTimeout)
	ictx = lambdacontext.NewContext(ictx, &lambdacontext.LambdaContext{
		AwsRequestID:       requestID,
		InvokedFunctionArn: "arn:aws:lambda:local:000000000000:function:" + p.o.FunctionName,
	})
	resp, err := p.call(ictx, events.SQSEvent{Records: msgs})
	cancel()
	if err != nil {
		log.Error("handler failed: the whole batch will be retried after its visibility timeout", "error", err.Error())
		return
	}
	keep, err := failedSet(msgs, resp)
	if err != nil {
		log.Error("invalid batch item failures: the whole batch will be retried", "error", err.Error())
		return
	}
	var done []events.SQSMessage
	for _, m := range msgs {
		if _, failed := keep[m.MessageId]; !failed {
			done = append(done, m)
		}
	}
	deleted := p.delete(context.WithoutCancel(ctx), done, received, log)
	log.Debug("batch done", "deleted", deleted, "failed", len(keep))
}

// delete deletes the messages the handler got through and returns how many
// it deleted. One that stays comes back after its visibility timeout and is
// handled again; SQIBS deduplicates a repeated trigger or resolve, but the
// run's repeats are what a delete's retries are there to avoid.
func (p *poller) delete(ctx context.Context, msgs []events.SQSMessage, received time.Time, log *slog.Logger) int {
	if len(msgs) == 0 {
		return 0
	}
	bd, ok := p.src.(BatchDeleter)
	if !ok {
		dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
		defer cancel()
		deleted := 0
		for _, m := range msgs {
			if err := p.src.Delete(dctx, m.ReceiptHandle); err != nil {
				log.Warn("delete failed: the message will be delivered again", "message_id", m.MessageId, "error", err.Error())
				continue
			}
			deleted++
		}
		return deleted
	}

	visibility := sqsDefaultVisibility
	if v, ok := p.src.(interface{ VisibilityTimeout() time.Duration }); ok && v.VisibilityTimeout() > 0 {
		visibility = v.VisibilityTimeout()
	}
	// One attempt even when the handler used up the visibility: SQS may not
	// have handed the messages out again yet.
	horizon := received.Add(visibility - deleteMargin)
	if least := time.Now().Add(deleteMargin); horizon.Before(least) {
		horizon = least
	}
	byHandle := make(map[string]events.SQSMessage, len(msgs))
	pending := make([]string, 0, len(msgs))
	for _, m := range msgs {
		byHandle[m.ReceiptHandle] = m
		pending = append(pending, m.ReceiptHandle)
	}
	giveUp := func(h string, f DeleteFailure, why string) {
		log.Warn("delete failed: the message will be delivered again", "message_id", byHandle[h].MessageId, "reason", why, "error", f.Err.Error())
	}
	deleted, wait := 0, deleteRetryBase
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithDeadline(ctx, earliest(horizon, time.Now().Add(deleteAttempt)))
		failed := bd.DeleteBatch(actx, pending)
		cancel()
		var retry []string
		for _, h := range pending {
			switch f, ok := failed[h]; {
			case !ok:
				deleted++
			case !f.Retry:
				giveUp(h, f, "refused")
			default:
				retry = append(retry, h)
			}
		}
		if len(retry) == 0 {
			return deleted
		}
		if time.Now().Add(wait).After(horizon) {
			for _, h := range retry {
				giveUp(h, failed[h], fmt.Sprintf("still failing after %d attempts, and the visibility ends soon", attempt))
			}
			return deleted
		}
		log.Warn("delete failed: retrying before the visibility ends", "messages", len(retry), "attempt", attempt,
			"retry_in", wait, "error", failed[retry[0]].Err.Error())
		time.Sleep(wait)
		wait = min(wait*2, deleteRetryMax)
		pending = retry
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// call invokes the handler; a panic is an error, as in Lambda.
func (p *poller) call(ctx context.Context, ev events.SQSEvent) (resp events.SQSEventResponse, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return p.h(ctx, ev)
}

// failedSet is the ids to keep; an invalid response fails the batch.
func failedSet(msgs []events.SQSMessage, resp events.SQSEventResponse) (map[string]struct{}, error) {
	if len(resp.BatchItemFailures) == 0 {
		return nil, nil
	}
	inBatch := make(map[string]struct{}, len(msgs))
	for _, m := range msgs {
		inBatch[m.MessageId] = struct{}{}
	}
	keep := make(map[string]struct{}, len(resp.BatchItemFailures))
	for _, f := range resp.BatchItemFailures {
		if _, ok := inBatch[f.ItemIdentifier]; !ok {
			return nil, fmt.Errorf("item identifier %q is not a message of this batch", f.ItemIdentifier)
		}
		keep[f.ItemIdentifier] = struct{}{}
	}
	return keep, nil
}
