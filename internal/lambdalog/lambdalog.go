// Package lambdalog gives log lines the keys Lambda users' tooling expects:
// those of AWS Lambda Powertools' structured logging. Every line carries
// `service` and, in Lambda, `function_name` (NewHandler); every line of an
// invocation also `function_request_id`, `cold_start` and, when Lambda
// passes a trace header, `xray_trace_id` (Invocation). So a Logs Insights
// query or a Powertools dashboard written for other functions works here.
//
// `request_id` keeps one meaning on every function: the webhook's request
// id (X-Buildkite-Request, else the receiver's Lambda request id), carried
// through the queue. The function's own is `function_request_id`.
package lambdalog

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Service is the `service` of every line and the Service metric dimension.
const Service = "buildkite-sqibs"

// Static are the attributes of every line of a process: service, and the
// function's name when Lambda set AWS_LAMBDA_FUNCTION_NAME.
func Static(functionName string) []any {
	attrs := []any{"service", Service}
	if functionName != "" {
		attrs = append(attrs, "function_name", functionName)
	}
	return attrs
}

// Starts tells each handler's first invocation (its cold start) from the
// rest. Each handler has its own: in `make dev` three share one process.
type Starts struct{ warm atomic.Bool }

// Invocation is what a log line of one invocation says about it.
type Invocation struct {
	RequestID string // the function's own (Lambda) request id
	TraceID   string // X-Ray's Root id, "" when Lambda passed none
	ColdStart bool
}

// Begin describes the invocation ctx belongs to.
func (s *Starts) Begin(ctx context.Context) Invocation {
	inv := Invocation{ColdStart: !s.warm.Swap(true)}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		inv.RequestID = lc.AwsRequestID
	}
	// aws-lambda-go puts the Lambda-Runtime-Trace-Id header here.
	if h, ok := ctx.Value("x-amzn-trace-id").(string); ok {
		inv.TraceID = traceRoot(h)
	}
	return inv
}

// Attrs are the invocation's log attributes.
func (inv Invocation) Attrs() []slog.Attr {
	attrs := make([]slog.Attr, 0, 3)
	if inv.RequestID != "" {
		attrs = append(attrs, slog.String("function_request_id", inv.RequestID))
	}
	attrs = append(attrs, slog.Bool("cold_start", inv.ColdStart))
	if inv.TraceID != "" {
		attrs = append(attrs, slog.String("xray_trace_id", inv.TraceID))
	}
	return attrs
}

// Logger is log with the invocation's attributes.
func (inv Invocation) Logger(log *slog.Logger) *slog.Logger {
	args := make([]any, 0, 3)
	for _, a := range inv.Attrs() {
		args = append(args, a)
	}
	return log.With(args...)
}

// traceRoot is the Root of "Root=1-5759e988-bd862e3fe1be46a994272793;
// Parent=...;Sampled=1", the id Powertools logs as xray_trace_id; "" when
// the header has none or it does not look like one (it is bounded: a
// trace id is 35 characters).
func traceRoot(h string) string {
	for part := range strings.SplitSeq(h, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == "Root" && v != "" && len(v) <= 64 {
			return v
		}
	}
	return ""
}

type invocationKey struct{}

// WithInvocation carries inv in ctx, for a handler that logs deep inside
// code that takes a context but not its logger (the reconciler's summary).
func WithInvocation(ctx context.Context, inv Invocation) context.Context {
	return context.WithValue(ctx, invocationKey{}, inv)
}

// FromContext is the invocation WithInvocation put in ctx; ok is false
// when there is none (make dev, tests).
func FromContext(ctx context.Context) (inv Invocation, ok bool) {
	inv, ok = ctx.Value(invocationKey{}).(Invocation)
	return inv, ok
}
