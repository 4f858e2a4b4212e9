// Package dispatcher is the SQS-fed half of the bridge: it maps each queued
// Buildkite event to an SQIBS incident and delivers it, reporting partial
// batch failures so SQS retries only what did not go through (DESIGN §5).
//
// Ordering: messages of one group (one incident) are handled in order; once
// one fails transiently, it and every later message of its group in the
// batch are reported failed without being tried, so a resolve can never
// overtake the trigger it resolves. Independent groups run concurrently.
package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/lambdalog"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
)

// Sender delivers one SQIBS payload. *sqibs.Client satisfies it.
type Sender interface {
	Send(ctx context.Context, body []byte) (sqibs.Result, error)
}

// Visibility delays the next delivery of a failed message (its backoff).
type Visibility interface {
	SetVisibility(ctx context.Context, sourceARN, receiptHandle string, timeout time.Duration) error
}

// DeadLetters takes a message that can never succeed, with the reason.
type DeadLetters interface {
	DeadLetter(ctx context.Context, m events.SQSMessage, reason string) error
}

// Reasons for dead-lettering, sent as the message's reason attribute.
const (
	ReasonUnreadable     = "unreadable_envelope"
	ReasonUnknownVersion = "unknown_envelope_version"
	ReasonRejected       = "sqibs_rejected"
	// ReasonRetryWindowExceeded: the event kept failing transiently until it
	// was older than RetryFor.
	ReasonRetryWindowExceeded = "retry_window_exceeded"
)

// Config tunes the handler.
type Config struct {
	Rules       incident.Rules
	Concurrency int           // groups delivered at once; default 8
	MaxBackoff  time.Duration // cap of the visibility backoff (MAX_BACKOFF); default 2 min
	BackoffBase time.Duration // backoff unit (2^receives of it); default 1 s, shorter in tests
	// RetryFor is how long a transiently failing event is retried, from its
	// SentTimestamp (RETRY_FOR); then it goes to the DLQ. Default 24 h.
	RetryFor time.Duration
	// ParentWait is how long a triggered build whose parent cannot be
	// looked up is retried before it is judged by its own branch; default
	// DefaultParentWait (enrich.go says why).
	ParentWait time.Duration
	// Now is the clock the age of a message is read against; default
	// time.Now (tests and the outage bench compress time with it).
	Now func() time.Time
	// Reserve is kept back from the Lambda deadline: no delivery starts
	// when less remains, so a slow batch ends with its tail reported failed
	// instead of the whole batch timing out and being redelivered, already
	// delivered events included. DeliveryBudget(SQIBS_TIMEOUT, API on) in Lambda.
	Reserve time.Duration
	// State is the incident state store (DESIGN §5b); nil keeps none.
	State Store
	// API is Buildkite's REST API (DESIGN §9): failed jobs in a failed
	// build's incident, triggered builds judged by their parent. nil (no
	// API token) turns both off; Rules.TriggeredByParent is then ignored.
	API BuildkiteAPI
}

// FinishTime is kept after the last delivery for reporting: setting retry
// delays, dead-lettering, answering. Every delivery is also cut off this
// long before the deadline, so none can run the invocation out of time.
const FinishTime = time.Second

// answerTime is left after the last SQS call to return the batch response.
const answerTime = 100 * time.Millisecond

// outcomeCtx is for the SQS calls that record an outcome (a retry delay, a
// dead letter). They run even when the delivery was cut or ctx canceled,
// but end before the invocation's deadline: a stalled call must not time
// the function out, or SQS redelivers the whole batch, delivered events
// included. A failed call only means the queue's own visibility timeout or
// redrive policy applies.
func outcomeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	c := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(c, dl.Add(-answerTime))
	}
	return c, func() {}
}

// Handler handles SQS batches.
type Handler struct {
	cfg     Config
	send    Sender
	vis     Visibility
	dlq     DeadLetters
	log     *slog.Logger
	metrics *metrics.Emitter
	now     func() time.Time
	jitter  func() float64 // in [0,1)
	parents parents        // triggered builds' parents already looked up
	starts  lambdalog.Starts
}

// New builds a Handler. vis and dlq may be nil (then backoff is SQS's
// default visibility, and permanent failures are left to the redrive policy).
func New(cfg Config, send Sender, vis Visibility, dlq DeadLetters, log *slog.Logger, m *metrics.Emitter) *Handler {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = DefaultRetryFor
	}
	if cfg.ParentWait <= 0 {
		cfg.ParentWait = DefaultParentWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = time.Second
	}
	if cfg.Reserve <= 0 {
		cfg.Reserve = DeliveryBudget(sqibs.DefaultTimeout, cfg.API != nil)
	}
	if cfg.API == nil {
		// Without the API no one can look a parent up: the child's own
		// branch decides, as DESIGN §9 says.
		cfg.Rules.TriggeredByParent = false
	}
	if log == nil {
		log = slog.Default()
	}
	stateNotice(cfg, log)
	return &Handler{cfg: cfg, send: send, vis: vis, dlq: dlq, log: log, metrics: m, now: cfg.Now, jitter: rand.Float64}
}

// Handle is the Lambda handler for an SQS event source mapping with
// ReportBatchItemFailures.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	inv := h.starts.Begin(ctx)
	if inv.ColdStart {
		h.metrics.Count(metrics.ColdStart)
	}
	log := inv.Logger(h.log)
	if dl, ok := ctx.Deadline(); ok && len(ev.Records) > 0 {
		if left := time.Until(dl); left < h.cfg.Reserve {
			// Not a slow batch: the function's timeout itself is too short
			// for one delivery, so nothing will ever be delivered.
			log.Error("invocation shorter than one delivery may take: nothing can be delivered; lower SQIBS_TIMEOUT or raise the function timeout",
				"invocation_left_ms", left.Milliseconds(), "delivery_budget_ms", h.cfg.Reserve.Milliseconds())
		}
	}
	groups := groupRecords(ev.Records)
	failed := make([][]string, len(groups))
	sem := make(chan struct{}, h.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			failed[i] = h.group(ctx, g, log)
		}()
	}
	wg.Wait()
	var resp events.SQSEventResponse
	for _, ids := range failed {
		for _, id := range ids {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: id})
		}
	}
	return resp, nil
}

// groupRecords splits a batch by MessageGroupId, keeping batch order inside
// each group. A record without a group id (a standard queue) is its own group.
func groupRecords(recs []events.SQSMessage) [][]events.SQSMessage {
	var groups [][]events.SQSMessage
	index := map[string]int{}
	for _, r := range recs {
		gid, ok := r.Attributes["MessageGroupId"]
		if !ok || gid == "" {
			groups = append(groups, []events.SQSMessage{r})
			continue
		}
		if i, ok := index[gid]; ok {
			groups[i] = append(groups[i], r)
			continue
		}
		index[gid] = len(groups)
		groups = append(groups, []events.SQSMessage{r})
	}
	return groups
}

// group delivers one group in order and returns the ids to report failed.
func (h *Handler) group(ctx context.Context, recs []events.SQSMessage, log *slog.Logger) []string {
	for i, r := range recs {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < h.cfg.Reserve {
			log.Warn("not enough time left in this invocation: leaving the rest of the group to SQS",
				"message_id", r.MessageId, "left", len(recs)-i)
			for _, later := range recs[i:] {
				h.delay(ctx, later, 0, log) // nothing failed: retry them soon
			}
			return ids(recs[i:])
		}
		if ok, delay := h.message(ctx, r, log); !ok {
			if n := len(recs) - i - 1; n > 0 {
				log.Info("holding back later messages of the group to keep order",
					"message_id", r.MessageId, "held_back", n)
			}
			// The whole group waits for the failed message's backoff. FIFO
			// holds a group while any of its messages is in flight, so the
			// held-back ones get the same delay; left alone they would lock
			// the group for the queue's full visibility timeout.
			for _, later := range recs[i:] {
				h.delay(ctx, later, delay, log)
			}
			return ids(recs[i:])
		}
	}
	return nil
}

func ids(recs []events.SQSMessage) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.MessageId
	}
	return out
}

// message handles one record; false means "transient: retry it after delay".
func (h *Handler) message(ctx context.Context, r events.SQSMessage, log *slog.Logger) (ok bool, delay time.Duration) {
	log = log.With("message_id", r.MessageId)
	env, err := queue.Decode([]byte(r.Body))
	if err != nil {
		reason := ReasonUnreadable
		if errors.Is(err, queue.ErrUnknownVersion) {
			reason = ReasonUnknownVersion
		}
		h.metrics.Count(metrics.PermanentFailure)
		log.Error("cannot read queued message: sending it to the dead-letter queue", "reason", reason, "error", err.Error())
		return h.deadLetter(ctx, r, reason, log), h.backoff(r)
	}
	log = log.With("request_id", env.RequestID, "event", env.Event)
	if env.Origin != "" {
		log = log.With("origin", env.Origin) // bounded by queue.Decode
	}

	judge, err := h.judge(ctx, env.Payload, log)
	if err != nil {
		// Only what may pass is waited for: a 404, a refused token or a
		// trigger loop would fail the same way for ParentWait.
		if sent, ok := sentAt(r); ok && retryableLookup(err) && h.now().Sub(sent) < h.cfg.ParentWait { // unknown age: judged at once
			return h.transient(ctx, r, log, failure{
				retry:  "triggered build's parent not looked up: will retry (judged by its own branch after ParentWait)",
				giveUp: "triggered build's parent not looked up for longer than RETRY_FOR: sending the event to the dead-letter queue",
			}, "error", err.Error())
		}
		log.Warn("triggered build's parent not looked up for ParentWait: judged by its own branch", "error", err.Error())
	}
	pl, d, ok := h.cfg.Rules.MapAs(env.Payload, env.ReceivedAt, judge)
	if !ok {
		// The receiver already dropped these; one can still arrive when the
		// rules changed while it was queued.
		log.Info("event changes no incident", "reason", d.Reason)
		h.metrics.Count(metrics.Ignored)
		return true, 0
	}
	log = log.With("incident_id", d.ID, "status", d.Status)
	guarded, err := h.guard(ctx, env.Payload, &pl, log)
	if err != nil {
		return h.stateFailed(ctx, r, err, log)
	}
	if !guarded.send() {
		return h.skip(ctx, r, guarded, log)
	}
	describeOrigin(&pl, env)
	h.addFailedJobs(ctx, env.Payload, &pl, d, env, log)
	body, err := json.Marshal(pl)
	if err != nil { // cannot happen with these types; treat as permanent
		h.metrics.Count(metrics.PermanentFailure)
		log.Error("encode SQIBS payload", "error", err.Error())
		return h.deadLetter(ctx, r, ReasonUnreadable, log), h.backoff(r)
	}

	sendCtx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithDeadline(ctx, dl.Add(-FinishTime))
		defer cancel()
	}
	res, err := h.send.Send(sendCtx, body)
	if err == nil {
		h.metrics.Count(metrics.Delivered)
		if env.Origin != "" {
			h.metrics.Count(metrics.Reconciled)
		}
		h.metrics.Emit(metrics.SQIBSLatencyMS, metrics.Milliseconds, float64(res.Latency.Microseconds())/1000)
		log.Info("delivered to SQIBS",
			"sqibs_status", res.Status, "sqibs_id", res.Response.ID,
			"created", res.Response.Triggered.Created, "trigger_duplicate", res.Response.Triggered.Duplicate,
			"resolved", res.Response.Resolved.Resolved, "resolve_duplicate", res.Response.Resolved.Duplicate,
			"attempts", res.Attempts, "latency_ms", float64(res.Latency.Microseconds())/1000)
		return h.commit(ctx, r, guarded, log)
	}
	var se *sqibs.Error
	status, sbody := 0, ""
	if errors.As(err, &se) {
		status, sbody = se.Status, se.Body
	}
	if sqibs.IsPermanent(err) {
		h.metrics.Count(metrics.PermanentFailure)
		log.Error("SQIBS rejected the incident: sending it to the dead-letter queue",
			"sqibs_status", status, "sqibs_body", sbody, "error", err.Error())
		return h.deadLetter(ctx, r, ReasonRejected, log), h.backoff(r)
	}
	return h.transient(ctx, r, log, failure{
		retry:  "SQIBS delivery failed: will retry",
		giveUp: "SQIBS delivery failed for longer than RETRY_FOR: sending the event to the dead-letter queue",
	}, "sqibs_status", status, "error", err.Error())
}

// failure names a transient failure in the log: the line of each retry,
// and the ERROR line when its event is given up. Whole sentences, so an
// operator's search for one finds it here.
type failure struct{ retry, giveUp string }

// transient handles a failure worth retrying (why in attrs): the event
// comes back after its backoff while it is younger than RETRY_FOR, and
// goes to the dead-letter queue as retry_window_exceeded after, with one
// ERROR line. SQIBS and the incident state share it, so a long outage of
// either ends in the DLQ, not in SQS's redrive net.
func (h *Handler) transient(ctx context.Context, r events.SQSMessage, log *slog.Logger, what failure, attrs ...any) (ok bool, delay time.Duration) {
	h.metrics.Count(metrics.TransientFailure)
	delay = h.backoff(r)
	if sent, ok := sentAt(r); ok && h.now().Sub(sent) >= h.cfg.RetryFor {
		h.metrics.Count(metrics.RetryWindowExceeded)
		log.Error(what.giveUp,
			append([]any{"reason", ReasonRetryWindowExceeded, "age_ms", h.now().Sub(sent).Milliseconds(),
				"retry_for", h.cfg.RetryFor.String(), "receives", receives(r)}, attrs...)...)
		return h.deadLetter(ctx, r, ReasonRetryWindowExceeded, log), delay
	}
	log.Warn(what.retry, append(attrs, "retry_in_ms", delay.Milliseconds())...)
	return false, delay
}

// backoff is the retry delay of r (backoffFor with its receive count).
func (h *Handler) backoff(r events.SQSMessage) time.Duration {
	return backoffFor(receives(r), h.cfg.BackoffBase, h.cfg.MaxBackoff, h.jitter())
}

func (h *Handler) delay(ctx context.Context, r events.SQSMessage, d time.Duration, log *slog.Logger) {
	if h.vis == nil {
		return
	}
	ctx, cancel := outcomeCtx(ctx)
	defer cancel()
	if err := h.vis.SetVisibility(ctx, r.EventSourceARN, r.ReceiptHandle, d); err != nil {
		// Not fatal: the message comes back after the queue's own visibility timeout.
		log.Warn("could not set the retry delay", "error", err.Error())
	}
}

// deadLetter parks a message that can never succeed. If the DLQ itself
// fails, the message is reported failed so SQS keeps it (and its redrive
// policy moves it to the DLQ in the end): nothing is lost.
func (h *Handler) deadLetter(ctx context.Context, r events.SQSMessage, reason string, log *slog.Logger) bool {
	if h.dlq == nil {
		h.metrics.Count(metrics.DeadLetterFailed)
		log.Error("no DLQ_URL configured: leaving the message to the queue's redrive policy", "reason", reason)
		return false
	}
	ctx, cancel := outcomeCtx(ctx)
	defer cancel()
	if err := h.dlq.DeadLetter(ctx, r, reason); err != nil {
		h.metrics.Count(metrics.DeadLetterFailed)
		log.Error("dead-letter send failed: message stays on the queue", "reason", reason, "error", err.Error())
		return false
	}
	return true
}
