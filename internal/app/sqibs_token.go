package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
)

// PlaceholderToken is the value template.yaml seeds the SQIBS secret with
// until an operator stores the real token.
const PlaceholderToken = "REPLACE_ME"

// ErrPlaceholder says the SQIBS secret was never set after deploy.
var ErrPlaceholder = errors.New("the SQIBS token secret still holds its placeholder: store the real token (scripts/put-sqibs-token)")

// SQIBSToken is the SQIBS API token source: SQIBS_API_TOKEN, else the
// secret SQIBS_TOKEN_SECRET_ARN. One of them is required.
func SQIBSToken(r *config.Reader, ttl time.Duration, aws func() (aws.Config, error), log *slog.Logger) (sqibs.TokenSource, error) {
	src, err := Token(r, SQIBSTokenVars, ttl, aws, log)
	if err != nil {
		return nil, err
	}
	if src == nil {
		return nil, fmt.Errorf("config: %s or %s is required", SQIBSTokenVars.ARNVar, SQIBSTokenVars.LiteralVar)
	}
	return placeholderGuard{src}, nil
}

// GuardSQIBSToken refuses the template's placeholder from src as
// SQIBSToken's source does: for a token source built elsewhere (make dev's
// printed default).
func GuardSQIBSToken(src sqibs.TokenSource) sqibs.TokenSource { return placeholderGuard{src} }

// placeholderGuard turns the template's placeholder into a clear error, so
// the dispatcher retries (and logs why) instead of sending a token SQIBS
// will refuse.
type placeholderGuard struct{ sqibs.TokenSource }

func (g placeholderGuard) Get(ctx context.Context) (string, error) {
	return check(g.TokenSource.Get(ctx))
}

func (g placeholderGuard) Refresh(ctx context.Context) (string, error) {
	return check(g.TokenSource.Refresh(ctx))
}

func check(v string, err error) (string, error) {
	return RefusePlaceholder(v, err, fmt.Errorf("sqibs token: %w", ErrPlaceholder))
}

// RefusePlaceholder is v, err, unless v is the placeholder the template
// seeds a secret with (or empty): then refused, so no request carries it.
// Every token source from a template secret passes through it.
func RefusePlaceholder(v string, err error, refused error) (string, error) {
	if err != nil {
		return "", err
	}
	if v == PlaceholderToken || v == "" {
		return "", refused
	}
	return v, nil
}
