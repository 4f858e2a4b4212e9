package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/callgoose/buildkite-sqibs/internal/lambdalog"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
)

// answerTime is kept back from the Lambda deadline to log the summary and
// answer.
const answerTime = 500 * time.Millisecond

// Result is what one scheduled invocation answers: its summary.
type Result struct {
	RunID        string `json:"run_id"`
	Checked      int    `json:"checked"`
	Resolved     int    `json:"resolved"`
	NotFound     int    `json:"not_found"`
	StillFailing int    `json:"still_failing"`
	Errors       int    `json:"errors"`
	RateLimited  int    `json:"rate_limited"`
	Skipped      int    `json:"skipped"`
	Unchecked    int    `json:"unchecked"`
	Calls        int    `json:"calls"`
	DurationMS   int64  `json:"duration_ms"`
}

// ErrRunFailed means a run learned nothing: the open incidents could not be
// listed, or every incident it asked about ended in an error (the API
// refusing the token or down, the queue unavailable). The invocation then
// fails, which the template's alarm on the function's Errors reports; a run
// where some incidents were checked is a success whatever else happened,
// its summary line (WARN) saying what.
var ErrRunFailed = errors.New("reconciler: the run checked nothing")

// Lambda is the handler of the scheduled function (an EventBridge event;
// its content does not matter).
type Lambda struct {
	R       *Reconciler
	Metrics *metrics.Emitter // nil writes none
	starts  lambdalog.Starts
}

// Handle runs once, until shortly before the invocation's deadline.
func (l *Lambda) Handle(ctx context.Context, _ events.EventBridgeEvent) (Result, error) {
	inv := l.starts.Begin(ctx)
	if inv.ColdStart {
		l.Metrics.Count(metrics.ColdStart)
	}
	ctx = lambdalog.WithInvocation(ctx, inv)
	runID := "local"
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		runID = lc.AwsRequestID
	}
	var deadline time.Time
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl.Add(-answerTime)
	}
	s, err := l.R.Run(ctx, runID, deadline)
	// Every run writes all three, zeros included, so a chart shows runs.
	l.Metrics.Emit(metrics.ReconcileResolved, metrics.Count, float64(s.Resolved+s.NotFound))
	l.Metrics.Emit(metrics.ReconcileErrors, metrics.Count, float64(s.Errors))
	l.Metrics.Emit(metrics.ReconcileRateLimited, metrics.Count, float64(s.RateLimited))
	res := Result{RunID: runID, Checked: s.Checked, Resolved: s.Resolved, NotFound: s.NotFound, StillFailing: s.StillFailing,
		Errors: s.Errors, RateLimited: s.RateLimited, Skipped: s.Skipped, Unchecked: s.Unchecked, Calls: s.Calls,
		DurationMS: s.Duration.Milliseconds()}
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrRunFailed, err)
	}
	if s.Checked > 0 && s.Errors == s.Checked {
		return res, fmt.Errorf("%w: all %d incidents asked about ended in an error, the first: %s", ErrRunFailed, s.Checked, s.FirstError)
	}
	return res, nil
}
