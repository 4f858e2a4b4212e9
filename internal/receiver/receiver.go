// Package receiver is the webhook endpoint: it authenticates a Buildkite
// webhook delivered through a Lambda function URL, drops what can never
// change an incident, and queues the rest (DESIGN §3). It answers 2xx only
// once the event is safely queued.
package receiver

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/lambdalog"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

// Config is the receiver's part of DESIGN §2.
type Config struct {
	MaxBodyBytes int64
	Auth         buildkite.Authenticator
	Rules        incident.Rules
	// Budget bounds the secret fetch and the queue send together, so a
	// failing dependency turns into a 503 well inside Buildkite's ~5 s wait.
	Budget time.Duration
}

// Defaults of DESIGN §2 and §3, named once: LoadConfig reads them from the
// environment's absence, New from a zero Config.
const (
	DefaultMaxBodyBytes = 1 << 20
	// maxBodyBytes is the function URL's own limit, 6 MB.
	maxBodyBytes = 6 << 20
	// DefaultBudget bounds the secret fetch and the queue send together,
	// under DESIGN §3's 3 s and well inside Buildkite's ~5 s wait.
	DefaultBudget = 2800 * time.Millisecond
)

// LoadConfig reads the receiver's settings. Token settings are read by the
// caller, which builds the token source.
func LoadConfig(r *config.Reader) Config {
	return Config{
		MaxBodyBytes: r.Int("MAX_BODY_BYTES", DefaultMaxBodyBytes, 1, maxBodyBytes),
		Auth: buildkite.Authenticator{
			MaxAge:     r.Duration("SIGNATURE_MAX_AGE", buildkite.DefaultMaxAge),
			AllowToken: r.Bool("ALLOW_TOKEN_HEADER", true),
		},
		Rules:  incident.LoadRules(r),
		Budget: DefaultBudget,
	}
}

// TokenSource yields the configured webhook token(s), newline-separated for
// rotation. *secret.Source satisfies it.
type TokenSource interface {
	Get(ctx context.Context) (string, error)
}

// Handler serves function URL requests.
type Handler struct {
	cfg     Config
	tokens  TokenSource
	pub     queue.Publisher
	log     *slog.Logger
	metrics *metrics.Emitter
	now     func() time.Time
	observe func(*buildkite.Payload)
	starts  lambdalog.Starts // tells the cold start (log key, ColdStart metric)
}

// Observe makes f see every authenticated webhook once parsed, before the
// rules drop anything (make dev feeds its Buildkite API simulator with it,
// so the jobs of a build are known even with JOB_INCIDENTS=false). f runs
// on the request path and must not keep p. Not used in Lambda.
func (h *Handler) Observe(f func(p *buildkite.Payload)) { h.observe = f }

// New builds a Handler. tokens may be nil: then every webhook is refused
// (fail closed) and one line says so now, at start.
func New(cfg Config, tokens TokenSource, pub queue.Publisher, log *slog.Logger, m *metrics.Emitter) *Handler {
	if log == nil {
		log = slog.Default()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Auth.MaxAge <= 0 {
		cfg.Auth.MaxAge = buildkite.DefaultMaxAge
	}
	if cfg.Budget <= 0 {
		cfg.Budget = DefaultBudget
	}
	if tokens == nil {
		log.Error("no webhook token configured: set WEBHOOK_TOKEN_SECRET_ARN or BUILDKITE_WEBHOOK_TOKEN; every webhook will be refused with 401")
	}
	return &Handler{cfg: cfg, tokens: tokens, pub: pub, log: log, metrics: m, now: time.Now}
}

// Response bodies. Fixed strings: nothing the caller sent is echoed back.
const (
	bodyPong          = `{"status":"pong"}`
	bodyUnauthorized  = `{"error":"unauthorized"}`
	bodyNotAllowed    = `{"error":"method not allowed"}`
	bodyTooLarge      = `{"error":"payload too large"}`
	bodyUnsupported   = `{"error":"unsupported media type"}`
	bodyBadJSON       = `{"error":"body is not a JSON object"}`
	bodyBadBase64     = `{"error":"body is not valid base64"}`
	bodyNoEvent       = `{"error":"no event name in X-Buildkite-Event header or body"}`
	bodyUnavailable   = `{"error":"temporarily unavailable"}`
	bodyInternalError = `{"error":"internal error"}`
)

// Handle is the Lambda handler for a function URL (BUFFERED) request.
func (h *Handler) Handle(ctx context.Context, req events.LambdaFunctionURLRequest) (events.LambdaFunctionURLResponse, error) {
	start := h.now()
	inv := h.starts.Begin(ctx)
	if inv.ColdStart {
		h.metrics.Count(metrics.ColdStart)
	}
	rid := requestID(ctx, req)
	o := h.serve(ctx, req, rid, start)
	attrs := append(inv.Attrs(),
		slog.String("request_id", rid),
		slog.Int("status", o.status),
		slog.String("outcome", o.outcome),
		slog.Float64("duration_ms", float64(h.now().Sub(start).Microseconds())/1000),
	)
	if o.event != "" {
		attrs = append(attrs, slog.String("event", o.event))
	}
	if o.incident != "" {
		attrs = append(attrs, slog.String("incident_id", o.incident))
	}
	if o.detail != "" {
		attrs = append(attrs, slog.String("detail", o.detail))
	}
	if o.messageID != "" {
		attrs = append(attrs, slog.String("message_id", o.messageID))
	}
	level := slog.LevelInfo
	if o.status >= 500 {
		level = slog.LevelError
	} else if o.status == http.StatusUnauthorized {
		level = slog.LevelWarn
	}
	if o.err != "" {
		attrs = append(attrs, slog.String("error", o.err))
	}
	h.log.LogAttrs(ctx, level, "webhook", attrs...)
	if o.metric != "" {
		h.metrics.Count(o.metric)
	}
	resp := events.LambdaFunctionURLResponse{
		StatusCode: o.status,
		Headers:    map[string]string{"content-type": "application/json"},
		Body:       o.body,
	}
	if o.status == http.StatusMethodNotAllowed {
		resp.Headers["allow"] = http.MethodPost
	}
	return resp, nil
}

// outcome is what happened to one request, for the response and the log.
type outcome struct {
	status    int
	body      string
	outcome   string // short word for the log: queued, pong, ignored, unauthorized, ...
	detail    string // why, in our words (never caller data)
	metric    string
	event     string
	incident  string
	messageID string
	err       string // our error text for the log (dependency failures)
}

func fail(status int, body, what, detail string) outcome {
	return outcome{status: status, body: body, outcome: what, detail: detail}
}

func (h *Handler) serve(ctx context.Context, req events.LambdaFunctionURLRequest, rid string, start time.Time) outcome {
	if req.RequestContext.HTTP.Method != "" && req.RequestContext.HTTP.Method != http.MethodPost {
		return fail(http.StatusMethodNotAllowed, bodyNotAllowed, "rejected", "method not allowed")
	}
	body, o, ok := h.body(req)
	if !ok {
		return o
	}
	if ct := header(req.Headers, "content-type"); ct != "" && !isJSON(ct) {
		return fail(http.StatusUnsupportedMediaType, bodyUnsupported, "rejected", "content type is not JSON")
	}

	ctx, cancel := context.WithTimeout(ctx, h.cfg.Budget)
	defer cancel()

	if o, ok := h.authenticate(ctx, req, body); !ok {
		return o
	}

	headerEvent := header(req.Headers, "x-buildkite-event")
	p, err := buildkite.Parse(body, headerEvent)
	if err != nil {
		if errors.Is(err, buildkite.ErrNoEvent) {
			return fail(http.StatusBadRequest, bodyNoEvent, "rejected", "no event name")
		}
		return fail(http.StatusBadRequest, bodyBadJSON, "rejected", "body is not a JSON object of the webhook shape")
	}
	event := safeWord(p.Event)
	if hv := buildkite.HeaderEvent(headerEvent); hv != "" && hv != p.Event {
		// Buildkite sends the same name in both; a difference is a proxy
		// rewriting headers or a replay being re-labelled. The header's
		// value is not logged: nothing a caller sends is logged raw.
		h.log.LogAttrs(ctx, slog.LevelWarn, "X-Buildkite-Event differs from the body's event: using the body's, which the signature covers",
			slog.String("request_id", rid), slog.String("event", event))
	}
	if p.Event == "ping" {
		return outcome{status: http.StatusOK, body: bodyPong, outcome: "pong", event: event}
	}
	if h.observe != nil {
		h.observe(p)
	}
	d := h.cfg.Rules.Classify(p)
	if !d.Act {
		return outcome{
			status: http.StatusAccepted, body: ignoredBody(d.Reason), outcome: "ignored",
			detail: d.Reason, metric: metrics.Ignored, event: event,
		}
	}
	msg, err := queue.NewMessage(p, d.ID, rid, start)
	if err != nil {
		o := fail(http.StatusInternalServerError, bodyInternalError, "error", "encode queue message")
		o.err = err.Error()
		return o
	}
	id, err := h.pub.Publish(ctx, msg)
	if err != nil {
		return outcome{status: http.StatusServiceUnavailable, body: bodyUnavailable, outcome: "unavailable",
			detail: "queue unavailable", event: event, incident: d.ID, err: err.Error()}
	}
	return outcome{
		status: http.StatusOK, body: `{"status":"queued","id":` + strconv.Quote(id) + `}`, outcome: "queued",
		metric: metrics.Queued, event: event, incident: d.ID, messageID: id,
	}
}

// body returns the raw request body, base64-decoded when the function URL
// says so, within MaxBodyBytes.
func (h *Handler) body(req events.LambdaFunctionURLRequest) ([]byte, outcome, bool) {
	max := h.cfg.MaxBodyBytes
	if !req.IsBase64Encoded {
		if int64(len(req.Body)) > max {
			return nil, fail(http.StatusRequestEntityTooLarge, bodyTooLarge, "rejected", "body over MAX_BODY_BYTES"), false
		}
		return []byte(req.Body), outcome{}, true
	}
	if int64(base64.StdEncoding.DecodedLen(len(req.Body))) > max+3 { // +3: padding slack; exact check below
		return nil, fail(http.StatusRequestEntityTooLarge, bodyTooLarge, "rejected", "body over MAX_BODY_BYTES"), false
	}
	b, err := base64.StdEncoding.DecodeString(req.Body)
	if err != nil {
		return nil, fail(http.StatusBadRequest, bodyBadBase64, "rejected", "body is not valid base64"), false
	}
	if int64(len(b)) > max {
		return nil, fail(http.StatusRequestEntityTooLarge, bodyTooLarge, "rejected", "body over MAX_BODY_BYTES"), false
	}
	return b, outcome{}, true
}

func (h *Handler) authenticate(ctx context.Context, req events.LambdaFunctionURLRequest, body []byte) (outcome, bool) {
	unauthorized := func(class string) (outcome, bool) {
		o := fail(http.StatusUnauthorized, bodyUnauthorized, "unauthorized", class)
		o.metric = metrics.Unauthorized
		return o, false
	}
	if h.tokens == nil {
		return unauthorized("no token configured")
	}
	raw, err := h.tokens.Get(ctx)
	if err != nil {
		o := fail(http.StatusServiceUnavailable, bodyUnavailable, "unavailable", "webhook token unavailable")
		o.err = err.Error()
		return o, false
	}
	tokens := buildkite.SplitTokens(raw)
	err = h.cfg.Auth.Verify(tokens, header(req.Headers, "x-buildkite-token"), header(req.Headers, "x-buildkite-signature"), body)
	if err != nil {
		return unauthorized(buildkite.Class(err))
	}
	return outcome{}, true
}

// header reads a header by lower-case name. Function URLs deliver lower-case
// names; the fallback scan covers other callers (tests, tools) cheaply.
func header(h map[string]string, name string) string {
	if v, ok := h[name]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// isJSON accepts application/json and application/*+json, with parameters.
// (mime.ParseMediaType would do, at the cost of a map per request.)
func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	if strings.EqualFold(mt, "application/json") {
		return true
	}
	return len(mt) > len("application/+json") &&
		strings.EqualFold(mt[:len("application/")], "application/") &&
		strings.EqualFold(mt[len(mt)-len("+json"):], "+json")
}

// requestID is X-Buildkite-Request when it looks like one, else the Lambda
// request id. The header is caller input, so it is only trusted when it is
// short and plain.
func requestID(ctx context.Context, req events.LambdaFunctionURLRequest) string {
	if v := header(req.Headers, "x-buildkite-request"); v != "" && len(v) <= 64 && isPlainID(v) {
		return v
	}
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	return req.RequestContext.RequestID
}

func isPlainID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// safeWord returns an event name for the log when it looks like one
// ("build.finished"), else "unknown": caller input is never logged raw.
func safeWord(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return "unknown"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c == '.' || c == '_') {
			return "unknown"
		}
	}
	return s
}

func ignoredBody(reason string) string {
	return `{"status":"ignored","reason":` + strconv.Quote(reason) + `}`
}
