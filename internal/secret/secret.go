// Package secret serves a token from a literal or from AWS Secrets Manager,
// with a TTL cache that keeps the last good value when a refresh fails.
//
// Values never appear in errors, logs or String(): only the secret id (an
// ARN or name, which is not secret) and the class of the failure.
package secret

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/callgoose/buildkite-sqibs/internal/config"
)

// API is the one Secrets Manager call we make (satisfied by *secretsmanager.Client).
type API interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// LoadTTL reads SECRET_TTL, how long every function reuses a fetched secret
// (DESIGN §2): each reads it the same way, its default named once.
func LoadTTL(r *config.Reader) time.Duration { return r.Duration("SECRET_TTL", DefaultTTL) }

// ErrUnavailable wraps every failure to produce a value: the caller answers
// 503 or retries later.
var ErrUnavailable = errors.New("secret unavailable")

const (
	// DefaultTTL applies when FromSecretsManager gets a ttl <= 0 (DESIGN §2 SECRET_TTL).
	DefaultTTL = 5 * time.Minute
	// DefaultFetchTimeout bounds one fetch so a hung endpoint cannot hold the
	// receiver past its 3 s budget.
	DefaultFetchTimeout = 2 * time.Second
	// maxBackoff caps the wait before retrying after a failed refresh, so an
	// outage costs one slow call per back-off period, not one per request.
	maxBackoff = 30 * time.Second
)

// Failure classes that are ours rather than AWS error codes.
var (
	errEmpty     = errors.New("secret is empty")
	errNotString = errors.New("secret has no SecretString (binary-only secrets are not supported)")
)

// Source is a secret value with a TTL cache. The zero value is not usable;
// build one with Literal or FromSecretsManager. Safe for concurrent use.
type Source struct {
	literal bool
	api     API
	id      string
	ttl     time.Duration
	backoff time.Duration
	timeout time.Duration
	now     func() time.Time // injectable so TTL tests need not sleep

	mu       sync.Mutex
	value    string
	have     bool      // a fetch has succeeded at least once
	fresh    time.Time // value is served without fetching until then
	retryAt  time.Time // after a failed refresh: no new attempt before then
	inflight *call     // the fetch every concurrent caller waits on
	log      *slog.Logger
}

// call is one fetch in progress; done closes when val/err are set.
type call struct {
	done   chan struct{}
	val    string
	err    error
	joined int // callers that found it in flight; lets tests see them wait
}

// Option adjusts a Source built by FromSecretsManager.
type Option func(*Source)

// WithFetchTimeout bounds each GetSecretValue call (default
// DefaultFetchTimeout); d <= 0 keeps the default.
func WithFetchTimeout(d time.Duration) Option {
	return func(s *Source) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithLogger sends the Source's one log line (a failed refresh served from
// the last good value) to log instead of slog.Default, which the functions
// never configure: they log JSON through their own logger.
func WithLogger(log *slog.Logger) Option {
	return func(s *Source) {
		if log != nil {
			s.log = log
		}
	}
}

// Literal is a value given directly in the environment: never fetched, never
// expires. Surrounding blanks are trimmed; "" is allowed and Get returns it,
// so callers can treat an empty value as "not configured".
func Literal(value string) *Source {
	return &Source{literal: true, value: clean(value), have: true}
}

// FromSecretsManager reads the SecretString of id (an ARN or a name) and
// reuses it for ttl (DefaultTTL when ttl <= 0).
func FromSecretsManager(api API, id string, ttl time.Duration, opts ...Option) *Source {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	s := &Source{
		api:     api,
		id:      id,
		ttl:     ttl,
		backoff: min(ttl, maxBackoff),
		timeout: DefaultFetchTimeout,
		now:     time.Now,
		log:     slog.Default(),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Name identifies the source in logs: "env" for a literal, otherwise the
// secret id. Never the value.
func (s *Source) Name() string {
	if s.literal {
		return "env"
	}
	return s.id
}

// String, GoString and LogValue keep the value out of any accidental
// fmt or slog output of the Source itself.
func (s *Source) String() string       { return "secret.Source(" + s.Name() + ")" }
func (s *Source) GoString() string     { return s.String() }
func (s *Source) LogValue() slog.Value { return slog.StringValue(s.Name()) }

// unavailable wraps a failure with what an operator needs (id, class)
// and nothing of the value.
func (s *Source) unavailable(err error) error {
	return fmt.Errorf("%w: %s (%s): %w", ErrUnavailable, s.id, class(err), err)
}

// Get returns the cached value while it is fresh and fetches it again after
// the TTL. Once a fetch has succeeded, Get never fails: a failed refresh
// (or ctx ending while it runs) serves the last good value, and the next
// attempt waits for a short back-off. Before that, failures wrap
// ErrUnavailable. Concurrent callers share one fetch.
func (s *Source) Get(ctx context.Context) (string, error) {
	if s.literal {
		return s.value, nil
	}
	s.mu.Lock()
	now := s.now()
	if s.have && (now.Before(s.fresh) || now.Before(s.retryAt) || ctx.Err() != nil) {
		v := s.value
		s.mu.Unlock()
		return v, nil
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return "", s.unavailable(err)
	}
	c := s.startLocked(ctx)
	s.mu.Unlock()

	select {
	case <-c.done:
		if c.err == nil {
			return c.val, nil
		}
		return s.fallback(c.err)
	case <-ctx.Done():
		return s.fallback(s.unavailable(ctx.Err()))
	}
}

// fallback serves the last good value if there is one, else err.
func (s *Source) fallback(err error) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.have {
		return s.value, nil
	}
	return "", err
}

// Refresh fetches the value now, ignoring TTL and back-off (it joins a fetch
// already in flight). Unlike Get it reports a failed fetch as an error
// wrapping ErrUnavailable, so a caller that was refused with the cached
// value knows the retry would be pointless; Get keeps serving the last good
// value meanwhile. For a literal it returns the literal.
func (s *Source) Refresh(ctx context.Context) (string, error) {
	if s.literal {
		return s.value, nil
	}
	if err := ctx.Err(); err != nil {
		return "", s.unavailable(err)
	}
	s.mu.Lock()
	c := s.startLocked(ctx)
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return "", s.unavailable(ctx.Err())
	}
}

// startLocked returns the fetch in flight, starting one if there is none.
// The fetch runs detached from the caller's cancellation (keeping its
// values) and bounded by the fetch timeout, so one caller giving up does not
// fail the others waiting on it; each caller stops waiting when its own ctx
// ends.
func (s *Source) startLocked(ctx context.Context) *call {
	if s.inflight != nil {
		s.inflight.joined++
		return s.inflight
	}
	c := &call{done: make(chan struct{})}
	s.inflight = c
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	go func() {
		defer cancel()
		v, err := s.fetch(fctx)
		s.finish(c, v, err)
	}()
	return c
}

// finish records the outcome of c, then releases its waiters.
func (s *Source) finish(c *call, v string, err error) {
	s.mu.Lock()
	now := s.now()
	if err == nil {
		s.value, s.have = v, true
		s.fresh, s.retryAt = now.Add(s.ttl), time.Time{}
	} else {
		err = s.unavailable(err)
		if s.have {
			s.retryAt = now.Add(s.backoff)
			s.log.Warn("secret refresh failed; serving the last good value",
				"secret", s.id, "error_class", class(err), "error", err.Error(), "retry_in_ms", s.backoff.Milliseconds())
		}
	}
	c.val, c.err = v, err
	s.inflight = nil
	s.mu.Unlock()
	close(c.done)
}

// fetch reads the secret once.
func (s *Source) fetch(ctx context.Context) (string, error) {
	out, err := s.api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.id)})
	if err != nil {
		return "", err
	}
	if out.SecretString == nil {
		if len(out.SecretBinary) > 0 {
			return "", errNotString
		}
		return "", errEmpty
	}
	v := clean(*out.SecretString)
	if v == "" {
		return "", errEmpty
	}
	return v, nil
}

// clean trims the blanks people paste around a token; inner newlines stay
// (the webhook secret may hold two tokens, one per line, during rotation).
func clean(v string) string { return strings.TrimSpace(v) }

// class names the kind of failure for logs and errors: the AWS error code
// when AWS answered, otherwise what went wrong locally.
func class(err error) string {
	var api smithy.APIError
	var send *smithyhttp.RequestSendError
	switch {
	case errors.Is(err, errEmpty):
		return "EmptySecret"
	case errors.Is(err, errNotString):
		return "NotAString"
	case errors.As(err, &api):
		return api.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	case errors.As(err, &send):
		return "RequestSendError"
	}
	return "Unknown"
}
