// Package buildkiteapi is a small client for the two Buildkite REST API
// calls the bridge makes (DESIGN §9): get a build (with or without its
// jobs) and list the newest finished builds of a branch.
//
// Responses are decoded straight into the webhook payload's allow-list types
// (internal/buildkite), which use the same field names, so env, creator
// e-mail, steps, agents and provider settings never leave the decoder.
//
// Failures are classified for the callers, who must never hold a page back
// for the API: ErrUnauthorized (401/403), ErrNotFound (404), *RateLimitError
// (429, carrying when the window resets; also returned without a request
// while a known window is exhausted), ErrUnavailable (5xx, timeouts, network),
// ErrMalformed (a body that is not the JSON expected, or too large). The
// token never appears in an error: it travels only in the Authorization
// header, and the base URL may not hold credentials.
package buildkiteapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/httpclient"
)

// DefaultBaseURL is BUILDKITE_API_URL's default (DESIGN §2).
const DefaultBaseURL = "https://api.buildkite.com/v2"

const (
	// DefaultTimeout bounds one request when Config.Timeout is zero; callers
	// with a tighter budget (enrichment: 1 s) pass a context deadline.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxBody bounds a response body when Config.MaxBody is zero. A
	// build with its jobs is ~3 KB per job in the documented shape, so this
	// holds builds of well over a thousand jobs.
	DefaultMaxBody = 8 << 20
	// UserAgent identifies the bridge to Buildkite.
	UserAgent = "buildkite-sqibs-bridge"

	maxMessage    = 200 // of Buildkite's error "message", kept in errors
	maxPerPage    = 100 // Buildkite's documented maximum
	defaultReset  = 60 * time.Second
	maxReset      = time.Hour // a Reset header beyond this is not believed
	resetHeader   = "RateLimit-Reset"
	userResetHdr  = "RateLimit-User-Reset"
	remainingHdr  = "RateLimit-Remaining"
	userRemainHdr = "RateLimit-User-Remaining"
)

// Classes of failure; test with errors.Is.
var (
	ErrUnauthorized = errors.New("buildkite api: token refused (401/403): check BUILDKITE_API_TOKEN and its read_builds scope")
	ErrNotFound     = errors.New("buildkite api: not found (404)")
	ErrRateLimited  = errors.New("buildkite api: rate limited")
	ErrUnavailable  = errors.New("buildkite api: unavailable")
	ErrMalformed    = errors.New("buildkite api: unexpected response")
	ErrNoToken      = errors.New("buildkite api: no API token")
)

// RateLimitError is a 429, or a call refused locally because the last
// answer said the window was used up. No call should be made before Reset.
// errors.Is(err, ErrRateLimited) is true for it.
type RateLimitError struct {
	Reset time.Time
	Scope string // "rest" (organization) or "rest_user" (the token's user); "" when not said
	Local bool   // refused without a request
}

func (e *RateLimitError) Error() string {
	s := "buildkite api: rate limited"
	if e.Scope != "" {
		s += " (scope " + e.Scope + ")"
	}
	if e.Local {
		s += ", not called"
	}
	return s + " until " + e.Reset.UTC().Format(time.RFC3339)
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// StatusError is an answer with an unexpected HTTP status. It wraps the
// class (ErrUnauthorized, ErrNotFound, ErrUnavailable or ErrMalformed).
type StatusError struct {
	Status  int
	Message string // Buildkite's "message", clipped; never the token
	class   error
}

func (e *StatusError) Error() string {
	s := e.class.Error() + ": HTTP " + strconv.Itoa(e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *StatusError) Unwrap() error { return e.class }

// TokenSource yields the API token. *secret.Source satisfies it.
type TokenSource interface {
	Get(ctx context.Context) (string, error)
}

// Config is the client's part of DESIGN §2.
type Config struct {
	BaseURL string        // BUILDKITE_API_URL; "" = DefaultBaseURL
	Timeout time.Duration // per request; 0 = DefaultTimeout
	MaxBody int64         // largest response body read; 0 = DefaultMaxBody
}

// Client calls one Buildkite REST API. Safe for concurrent use.
type Client struct {
	base    *url.URL
	timeout time.Duration
	maxBody int64
	tokens  TokenSource
	hc      *http.Client
	now     func() time.Time

	mu    sync.Mutex
	until time.Time // no call before then: a window is known to be used up
	scope string    // which window
}

// New validates cfg and builds a client. hc nil means httpclient.New's.
// Redirects are not followed (httpclient.NoRedirects): Buildkite answers
// these calls directly.
func New(cfg Config, tokens TokenSource, hc *http.Client) (*Client, error) {
	if tokens == nil {
		return nil, errors.New("buildkiteapi: no token source")
	}
	if cfg.Timeout < 0 || cfg.MaxBody < 0 {
		return nil, errors.New("buildkiteapi: timeout and body limit must not be negative")
	}
	raw := cmp.Or(cfg.BaseURL, DefaultBaseURL)
	u, err := url.Parse(raw)
	if err != nil {
		// Not even the cause: it quotes parts of the input, which could be
		// a mistyped token.
		return nil, errors.New("buildkiteapi: BUILDKITE_API_URL is not a valid URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("buildkiteapi: BUILDKITE_API_URL must be an absolute http:// or https:// URL")
	}
	if u.User != nil {
		return nil, errors.New("buildkiteapi: BUILDKITE_API_URL must not hold credentials (the token comes from BUILDKITE_API_TOKEN)")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("buildkiteapi: BUILDKITE_API_URL must not have a query or fragment")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	hc = httpclient.NoRedirects(hc, 4)
	return &Client{
		base:    u,
		timeout: cmp.Or(cfg.Timeout, DefaultTimeout),
		maxBody: cmp.Or(cfg.MaxBody, DefaultMaxBody),
		tokens:  tokens,
		hc:      hc,
		now:     time.Now,
	}, nil
}

// Build is a build as the REST API returns it, decoded into the webhook
// payload's types: the build fields, its pipeline and (when asked for) its
// jobs. Message holds the commit subject only, as after buildkite.Parse.
type Build struct {
	buildkite.Build
	Pipeline *buildkite.Pipeline `json:"pipeline,omitempty"`
	Jobs     []buildkite.Job     `json:"jobs,omitempty"`
}

// Payload is the trimmed webhook payload a webhook for this build carries
// (event, build, pipeline; no jobs), for queueing as if Buildkite had sent it.
func (b *Build) Payload(event string) *buildkite.Payload {
	bb := b.Build
	return &buildkite.Payload{Event: event, Build: &bb, Pipeline: b.Pipeline}
}

// Build gets one build without its jobs (exclude_jobs=true).
func (c *Client) Build(ctx context.Context, org, pipeline string, number int64) (*Build, error) {
	return c.getBuild(ctx, org, pipeline, number, false)
}

// BuildWithJobs gets one build with its jobs (only the latest try of a
// retried job, as Buildkite lists them by default).
func (c *Client) BuildWithJobs(ctx context.Context, org, pipeline string, number int64) (*Build, error) {
	return c.getBuild(ctx, org, pipeline, number, true)
}

func (c *Client) getBuild(ctx context.Context, org, pipeline string, number int64, jobs bool) (*Build, error) {
	if number <= 0 {
		return nil, fmt.Errorf("buildkiteapi: get build %s/%s: no build number", org, pipeline)
	}
	q := url.Values{}
	if !jobs {
		q.Set("exclude_jobs", "true")
	}
	var b Build
	what := "get build " + org + "/" + pipeline + " #" + strconv.FormatInt(number, 10)
	if err := c.get(ctx, what, buildPath(org, pipeline)+"/"+strconv.FormatInt(number, 10), q, &b); err != nil {
		return nil, err
	}
	clean(&b)
	return &b, nil
}

// FinishedBuilds lists up to n (1–100) of the newest builds of branch that
// passed or failed, newest first (Buildkite lists by creation), without
// jobs. Blocked builds are left out: a blocked build keeps an old state and
// has not finished. The state filter is state[]=passed&state[]=failed rather
// than Buildkite's "finished" shortcut, which also matches blocked and
// canceled builds; a canceled build says nothing about whether the branch is
// healthy. Only builds whose branch is exactly branch are returned (the
// filter also takes globs).
func (c *Client) FinishedBuilds(ctx context.Context, org, pipeline, branch string, n int) ([]Build, error) {
	if branch == "" {
		return nil, fmt.Errorf("buildkiteapi: list builds %s/%s: no branch", org, pipeline)
	}
	n = min(max(n, 1), maxPerPage)
	q := url.Values{}
	q.Set("branch", branch)
	q["state[]"] = []string{"passed", "failed"}
	q.Set("per_page", strconv.Itoa(n))
	q.Set("exclude_jobs", "true")
	var list []Build
	if err := c.get(ctx, "list builds "+org+"/"+pipeline, buildPath(org, pipeline), q, &list); err != nil {
		return nil, err
	}
	out := list[:0]
	for i := range list {
		b := &list[i]
		if b.Blocked || b.Branch != branch || (b.State != "passed" && b.State != "failed") {
			continue
		}
		clean(b)
		out = append(out, *b)
	}
	return out, nil
}

// CheckOrg reports whether the token can read org's builds: nil, or the
// error of listing one build of the organization (read_builds, like the
// other calls). A 404 for a pipeline means "gone" only if this succeeds; a
// token for the wrong organization gets 404s too.
func (c *Client) CheckOrg(ctx context.Context, org string) error {
	q := url.Values{}
	q.Set("per_page", "1")
	q.Set("exclude_jobs", "true")
	q.Set("exclude_pipeline", "true")
	var list []json.RawMessage
	return c.get(ctx, "list builds of "+org, "/organizations/"+url.PathEscape(org)+"/builds", q, &list)
}

func buildPath(org, pipeline string) string {
	return "/organizations/" + url.PathEscape(org) + "/pipelines/" + url.PathEscape(pipeline) + "/builds"
}

// clean applies what buildkite.Parse applies to a webhook: every string
// bounded and without e-mail addresses, the commit message reduced to its
// subject. API answers reach the SQIBS payload (failed_jobs), the queue
// (the reconciler's resolves) and log lines like webhooks do.
func clean(b *Build) {
	(&buildkite.Payload{Build: &b.Build, Pipeline: b.Pipeline}).Sanitize()
	for i := range b.Jobs {
		(&buildkite.Payload{Job: &b.Jobs[i]}).Sanitize()
	}
}

// get makes one GET and decodes a 200 body into v.
func (c *Client) get(ctx context.Context, what, path string, q url.Values, v any) error {
	fail := func(err error) error { return fmt.Errorf("buildkiteapi: %s: %w", what, err) }
	if err := c.blocked(); err != nil {
		return fail(err)
	}
	token, err := c.tokens.Get(ctx)
	if err != nil {
		return fail(fmt.Errorf("%w: get token: %w", ErrUnavailable, err))
	}
	if token == "" {
		return fail(ErrNoToken)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path // path is escaped already
	u.Path, err = url.PathUnescape(u.RawPath)
	if err != nil {
		return fail(err)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", UserAgent)

	resp, err := c.hc.Do(req)
	if err != nil {
		return fail(c.transportError(ctx, err, token))
	}
	defer resp.Body.Close()
	c.observe(resp)
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		return fail(c.transportError(ctx, err, token))
	}
	if int64(len(data)) > c.maxBody {
		return fail(fmt.Errorf("%w: response larger than %d bytes", ErrMalformed, c.maxBody))
	}
	switch s := resp.StatusCode; {
	case s == http.StatusOK:
		if err := json.Unmarshal(data, v); err != nil {
			return fail(fmt.Errorf("%w: decode: %w", ErrMalformed, err))
		}
		return nil
	case s == http.StatusTooManyRequests:
		return fail(c.limited(resp, data))
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return fail(&StatusError{Status: s, Message: message(data, token), class: ErrUnauthorized})
	case s == http.StatusNotFound:
		return fail(&StatusError{Status: s, Message: message(data, token), class: ErrNotFound})
	case s >= 500 || s == http.StatusRequestTimeout:
		return fail(&StatusError{Status: s, Message: message(data, token), class: ErrUnavailable})
	default:
		return fail(&StatusError{Status: s, Message: message(data, token), class: ErrMalformed})
	}
}

// blocked refuses a call while a window is known to be used up, so a 429
// is honoured by every caller sharing the client, not just the one that
// got it.
func (c *Client) blocked() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now().Before(c.until) {
		return &RateLimitError{Reset: c.until, Scope: c.scope, Local: true}
	}
	return nil
}

// observe reads the rate-limit headers of any answer: a window with
// nothing remaining blocks calls until it resets.
func (c *Client) observe(resp *http.Response) {
	for _, w := range [...]struct{ remaining, reset, scope string }{
		{remainingHdr, resetHeader, "rest"},
		{userRemainHdr, userResetHdr, "rest_user"},
	} {
		rem, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get(w.remaining)))
		if err != nil || rem > 0 {
			continue
		}
		if d, ok := resetIn(resp.Header.Get(w.reset)); ok {
			c.block(c.now().Add(d), w.scope)
		}
	}
}

func (c *Client) block(until time.Time, scope string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until.After(c.until) {
		c.until, c.scope = until, scope
	}
}

// limited builds the error for a 429. Which window ran out is in the body's
// "scope" (documented); the wait is the larger of the two Reset headers,
// else the body's "reset", else a minute (the window's length).
func (c *Client) limited(resp *http.Response, data []byte) error {
	var body struct {
		Scope string `json:"scope"`
		Reset *int64 `json:"reset"`
	}
	_ = json.Unmarshal(data, &body)
	wait, ok := time.Duration(0), false
	for _, h := range []string{resetHeader, userResetHdr} {
		if d, good := resetIn(resp.Header.Get(h)); good {
			wait, ok = max(wait, d), true
		}
	}
	if !ok && body.Reset != nil && *body.Reset >= 0 {
		wait, ok = min(time.Duration(*body.Reset)*time.Second, maxReset), true
	}
	if !ok {
		wait = defaultReset
	}
	scope := body.Scope
	if scope != "rest" && scope != "rest_user" {
		scope = "" // caller data: only the documented words are kept
	}
	until := c.now().Add(wait)
	c.block(until, scope)
	return &RateLimitError{Reset: until, Scope: scope}
}

// resetIn reads a Reset header: seconds until the window resets
// (documented as such, not a timestamp).
func resetIn(h string) (time.Duration, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(h), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return min(time.Duration(n)*time.Second, maxReset), true
}

// transportError classifies a failure to get an answer. Go's *url.Error
// quotes the request URL (no token there, but the branch is caller data and
// already in the error's context), so only its cause is kept.
func (c *Client) transportError(ctx context.Context, err error, token string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("%w: no answer in time: %w", ErrUnavailable, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, redact(err.Error(), token))
}

// message is Buildkite's error "message", bounded, valid UTF-8, never the
// token (should a proxy echo the request).
func message(data []byte, token string) string {
	var body struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &body) != nil {
		return ""
	}
	return buildkite.Clip(strings.TrimSpace(redact(body.Message, token)), maxMessage)
}

func redact(s, token string) string {
	if token == "" {
		return s
	}
	return strings.ReplaceAll(s, token, "[REDACTED]")
}

// Class names the kind of failure for a metric dimension or a log field:
// rate_limited, not_found, unauthorized, timeout, unavailable, malformed,
// canceled or other.
func Class(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrNoToken):
		return "unauthorized"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	}
	return "other"
}
