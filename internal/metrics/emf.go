// Package metrics writes CloudWatch Embedded Metric Format (EMF) records:
// one JSON log line per record, which CloudWatch Logs turns into metrics
// with no API call and no extra latency on the request path.
//
// https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
package metrics

import (
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/lambdalog"
)

// Namespace is the CloudWatch namespace of every metric the bridge emits.
const Namespace = "BuildkiteSQIBS"

// Metric names (DESIGN: the same set for both functions).
const (
	Queued           = "queued"
	Ignored          = "ignored"
	Unauthorized     = "unauthorized"
	Delivered        = "delivered"
	TransientFailure = "transient_failure"
	PermanentFailure = "permanent_failure"
	// RetryWindowExceeded counts events dead-lettered after failing for
	// longer than RETRY_FOR (they count as transient failures too).
	RetryWindowExceeded = "retry_window_exceeded"
	// DeadLetterFailed counts dead-letter sends that failed (the DLQ
	// unreachable, or DLQ_URL unset): the message stays on the queue
	// until a later try or the redrive policy parks it.
	DeadLetterFailed = "dead_letter_failed"
	SQIBSLatencyMS   = "sqibs_latency_ms"
)

// Incident state metrics (DESIGN §5b), dispatcher only.
const (
	Stale           = "stale"              // an event not newer than the state's: not sent
	HeldBack        = "held_back"          // newer, but the state says not to send it (below ALERT_AFTER_FAILURES, nothing open, a job still failing)
	TimeToRecoveryS = "time_to_recovery_s" // first failure → resolve, with a Pipeline dimension
)

// Buildkite REST API metrics (DESIGN §9).
const (
	Enriched          = "enriched"             // a failed build's incident names its failed jobs
	EnrichmentSkipped = "enrichment_skipped"   // the API did not answer in time: sent without failed_jobs
	ParentUnknown     = "parent_lookup_failed" // a triggered build judged by its own branch: the parent's lookup failed
	Reconciled        = "reconciled"           // a resolve the reconciler queued, delivered (dispatcher)
	// The reconciler's run, one record each per run.
	ReconcileResolved    = "reconcile_resolved" // resolves queued (a newer build passed, or 404)
	ReconcileErrors      = "reconcile_errors"
	ReconcileRateLimited = "reconcile_rate_limited"
)

// Unit values used here.
const (
	Count        = "Count"
	Milliseconds = "Milliseconds"
	Seconds      = "Seconds"
)

// ColdStart counts the first invocation of a handler in its process, as
// Lambda Powertools' metrics do.
const ColdStart = "ColdStart"

// Emitter writes EMF records for one function. A nil *Emitter is valid and
// writes nothing, so tests and tools can leave metrics out.
type Emitter struct {
	function string
	w        io.Writer
	now      func() time.Time
	mu       sync.Mutex
	buf      []byte
}

// New returns an Emitter writing to w. Every metric has the dimensions
// Service (lambdalog.Service, as Powertools names it) and FunctionName.
func New(w io.Writer, function string) *Emitter {
	if function == "" {
		function = "local"
	}
	return &Emitter{function: function, w: w, now: time.Now}
}

// Count records one occurrence of name.
func (e *Emitter) Count(name string) { e.Emit(name, Count, 1) }

// Emit writes one record holding one metric value.
func (e *Emitter) Emit(name, unit string, value float64) { e.emit(name, unit, value, "") }

// EmitPipeline is Emit with a second dimension, Pipeline (the slug), so a
// figure can be charted per pipeline.
func (e *Emitter) EmitPipeline(name, unit string, value float64, pipeline string) {
	e.emit(name, unit, value, pipeline)
}

func (e *Emitter) emit(name, unit string, value float64, pipeline string) {
	if e == nil || e.w == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.buf[:0]
	b = append(b, `{"_aws":{"Timestamp":`...)
	b = strconv.AppendInt(b, e.now().UnixMilli(), 10)
	b = append(b, `,"CloudWatchMetrics":[{"Namespace":"`+Namespace+`","Dimensions":[["Service","FunctionName"`...)
	if pipeline != "" {
		b = append(b, `,"Pipeline"`...)
	}
	b = append(b, `]],"Metrics":[{"Name":"`...)
	b = append(b, name...) // names are the constants above: no escaping needed
	b = append(b, `","Unit":"`...)
	b = append(b, unit...)
	b = append(b, `"}]}]},"Service":"`+lambdalog.Service+`","FunctionName":`...)
	b = strconv.AppendQuote(b, e.function)
	if pipeline != "" {
		// A slug from the payload: JSON-quoted, which strconv's Go
		// quoting is not for control characters.
		q, _ := json.Marshal(pipeline)
		b = append(b, `,"Pipeline":`...)
		b = append(b, q...)
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	b = strconv.AppendFloat(b, value, 'f', -1, 64)
	b = append(b, '}', '\n')
	e.buf = b
	_, _ = e.w.Write(b)
}
