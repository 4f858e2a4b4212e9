// Package sqibs is the HTTP client for Callgoose SQIBS's incident endpoint
// (POST …/v1/process). It sends one JSON payload, authenticates with a
// bearer header or a token query parameter, and classifies the outcome so
// the dispatcher knows whether to retry (DESIGN §5):
//
//   - 2xx (SQIBS uses 200 resolved, 201 created, 202 no filter matched): success;
//   - 408, 429, 5xx, timeouts, network errors, token fetch failures: transient;
//   - 401/403: the token is refreshed once and the request retried once;
//     a second refusal is transient (the token may be being rotated);
//   - other 3xx/4xx: permanent, with SQIBS's body kept for the log.
//
// The token never appears in an error string: Go's *url.Error quotes the
// full request URL, which holds the token in query mode, so it is replaced.
package sqibs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/callgoose/buildkite-sqibs/internal/httpclient"
)

// Auth says how the token travels.
type Auth string

const (
	AuthHeader Auth = "header" // Authorization: Bearer <token>
	AuthQuery  Auth = "query"  // ?token=<token>
)

// UserAgent identifies the bridge to SQIBS.
const UserAgent = "buildkite-sqibs-bridge"

// DefaultTimeout applies when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

const (
	maxBody    = 64 << 10 // read at most this much of a response
	maxErrBody = 1 << 10  // SQIBS body kept in an Error, for the log
)

// Config is the client's part of DESIGN §2.
type Config struct {
	URL     string        // taken verbatim, its existing query kept
	Auth    Auth          // "" means AuthHeader
	From    string        // "" = omit the from parameter
	Timeout time.Duration // per request; 0 means DefaultTimeout
}

// TokenSource yields the SQIBS API token. *secret.Source satisfies it.
type TokenSource interface {
	Get(ctx context.Context) (string, error)
	// Refresh bypasses any cache; called after SQIBS refuses the token.
	Refresh(ctx context.Context) (string, error)
}

// Response is SQIBS's answer body; zero when the body is not that JSON.
type Response struct {
	ID        string `json:"id"`
	Triggered struct {
		Duplicate bool `json:"duplicate"`
		Created   bool `json:"created"`
	} `json:"triggered"`
	Resolved struct {
		Duplicate bool `json:"duplicate"`
		Resolved  bool `json:"resolved"`
	} `json:"resolved"`
}

// Result describes one Send. It is filled as far as it got on failure too.
type Result struct {
	Status   int           // HTTP status of the last attempt; 0 if none answered
	Response Response      // decoded body on success
	Latency  time.Duration // total time of Send, token fetches included
	Attempts int           // HTTP requests made (2 after a token refresh)
}

// Client posts payloads to one SQIBS endpoint. Safe for concurrent use.
type Client struct {
	base    *url.URL // cfg.URL with from added; never holds the token we add
	where   string   // scheme://host/path, for error messages: no query at all
	auth    Auth
	timeout time.Duration
	tokens  TokenSource
	hc      *http.Client
}

// New validates cfg and builds a client. hc nil means a tuned default client.
// Redirects are never followed (a copy of hc is made): a POST redirected to
// a GET would look like success, so a 3xx is reported as a permanent error
// that says to fix the URL.
func New(cfg Config, tokens TokenSource, hc *http.Client) (*Client, error) {
	auth := cfg.Auth
	if auth == "" {
		auth = AuthHeader
	}
	if auth != AuthHeader && auth != AuthQuery {
		return nil, fmt.Errorf("sqibs: auth (SQIBS_AUTH) must be %q or %q, got %q", AuthHeader, AuthQuery, cfg.Auth)
	}
	if tokens == nil {
		return nil, errors.New("sqibs: no token source")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("sqibs: timeout (SQIBS_TIMEOUT) must not be negative, got %s", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Parse quotes the whole input, which may hold a token: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("sqibs: URL (SQIBS_URL) is not a valid URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("sqibs: URL (SQIBS_URL) must be an absolute http:// or https:// URL")
	}
	u.Fragment, u.RawFragment = "", ""
	if cfg.From != "" {
		u.RawQuery = withParam(u.RawQuery, "from", cfg.From)
	}
	// Above the dispatcher's concurrency: one host.
	hc = httpclient.NoRedirects(hc, 32)
	return &Client{
		base:    u,
		where:   (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String(),
		auth:    auth,
		timeout: timeout,
		tokens:  tokens,
		hc:      hc,
	}, nil
}

// Send posts body (a JSON payload) once, or twice when SQIBS refuses the
// token and a refreshed one is available. A non-nil error is an *Error.
func (c *Client) Send(ctx context.Context, body []byte) (Result, error) {
	start := time.Now()
	var res Result
	done := func(err *Error) (Result, error) {
		res.Latency = time.Since(start)
		if err != nil {
			return res, err
		}
		return res, nil
	}

	token, err := c.tokens.Get(ctx)
	if err != nil {
		return done(&Error{Class: Transient, Err: fmt.Errorf("get token: %w", err)})
	}
	out := c.attempt(ctx, token, body, &res)
	if out == nil || !refused(out.Status) {
		return done(out)
	}

	token, err = c.tokens.Refresh(ctx)
	if err != nil {
		return done(&Error{Class: Transient, Status: out.Status, Body: out.Body,
			Err: fmt.Errorf("SQIBS refused the token and refreshing it failed: %w", err)})
	}
	out = c.attempt(ctx, token, body, &res)
	if out != nil && refused(out.Status) {
		out.Err = errors.New("SQIBS refused the token, also after a refresh")
	}
	return done(out)
}

// withParam sets one query parameter: it drops the pairs named name and
// appends name=value, keeping every other pair byte for byte and in order.
// url.Values would re-encode the whole query (DESIGN §2 keeps SQIBS_URL's
// verbatim), reorder it and silently drop pairs it cannot parse, such as
// ones holding ';'.
func withParam(rawQuery, name, value string) string {
	var b strings.Builder
	for pair := range strings.SplitSeq(rawQuery, "&") {
		key, _, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(key); pair == "" || (err == nil && k == name) {
			continue
		}
		b.WriteString(pair)
		b.WriteByte('&')
	}
	b.WriteString(url.QueryEscape(name) + "=" + url.QueryEscape(value))
	return b.String()
}

func refused(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// attempt makes one request with its own timeout and records it in res.
func (c *Client) attempt(ctx context.Context, token string, body []byte, res *Result) *Error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res.Attempts++
	res.Status = 0

	u := *c.base // copy: the token goes on this request only
	if c.auth == AuthQuery {
		u.RawQuery = withParam(u.RawQuery, "token", token)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return &Error{Class: Permanent, Err: c.scrub(ctx, err, token)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	if c.auth == AuthHeader {
		req.Header.Set("Authorization", "Bearer "+token)
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		return &Error{Class: Transient, Err: c.scrub(ctx, err, token)}
	}
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	// Drain a little more so the connection can be reused, then close.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	res.Status = resp.StatusCode

	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		// SQIBS has processed the event: a body we cannot read or decode
		// does not make it fail (a retry would only duplicate it).
		if readErr == nil {
			var r Response
			if json.Unmarshal(data, &r) == nil {
				res.Response = r
			}
		}
		return nil
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		return &Error{Class: Transient, Status: s, Body: clip(data, token)}
	case s >= 300 && s < 400:
		return &Error{Class: Permanent, Status: s, Body: clip(data, token),
			Err: errors.New("SQIBS answered with a redirect: set SQIBS_URL to the final endpoint")}
	case refused(s):
		return &Error{Class: Transient, Status: s, Body: clip(data, token)}
	default:
		return &Error{Class: Permanent, Status: s, Body: clip(data, token)}
	}
}

// scrub replaces a *url.Error (whose message holds the full URL, token
// included in query mode) with one naming only scheme, host and path, says
// when our own per-request deadline was hit (the transport reports only
// "context deadline exceeded"), and redacts the token should it appear
// anywhere else in the message.
func (c *Client) scrub(ctx context.Context, err error, token string) error {
	inner := err
	if ue, ok := err.(*url.Error); ok { // http.Client.Do returns it unwrapped
		inner = ue.Err
	}
	detail := inner.Error()
	if errors.Is(inner, context.DeadlineExceeded) && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		detail = fmt.Sprintf("no answer within %s (%s)", c.timeout, detail)
	}
	return &scrubbed{msg: redact("POST "+c.where+": "+detail, token), err: inner}
}

type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }

func redact(s, token string) string {
	if token == "" {
		return s
	}
	s = strings.ReplaceAll(s, token, "[REDACTED]")
	if q := url.QueryEscape(token); q != token {
		s = strings.ReplaceAll(s, q, "[REDACTED]")
	}
	return s
}

// clip keeps the start of an error body for the log, valid UTF-8, and
// never the token (in case SQIBS echoes the request).
func clip(data []byte, token string) string {
	s := redact(string(data), token)
	if len(s) > maxErrBody {
		cut := maxErrBody
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
}
