package buildkiteapi

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/config"
)

// ErrPlaceholder means the API token secret was never set after deploy.
// It wraps ErrNoToken, so Class says "unauthorized".
var ErrPlaceholder = fmt.Errorf("%w: the Buildkite API token secret still holds its placeholder: store a read_builds token in it", ErrNoToken)

// URLVar is the variable of the API's base URL (DESIGN §2).
const URLVar = "BUILDKITE_API_URL"

// FromEnv builds the client DESIGN §2 configures for the dispatcher and the
// reconciler: the token BUILDKITE_API_TOKEN, else the secret
// BUILDKITE_API_TOKEN_SECRET_ARN (reused for ttl; the template's
// placeholder refused), against BUILDKITE_API_URL. It returns nil, nil when
// no token is configured: the API is off, and BUILDKITE_API_URL is not
// even read. A bad URL is an error naming the variable (never quoting it:
// a URL can hold a mistyped token).
func FromEnv(r *config.Reader, ttl time.Duration, awsCfg func() (aws.Config, error), log *slog.Logger) (*Client, error) {
	if !app.BuildkiteAPITokenVars.Configured(r) {
		return nil, nil
	}
	base := r.String(URLVar, DefaultBaseURL)
	src, err := app.Token(r, app.BuildkiteAPITokenVars, ttl, awsCfg, log)
	if err != nil {
		return nil, err
	}
	return New(Config{BaseURL: base}, GuardPlaceholder(src), nil)
}

// GuardPlaceholder wraps a token source so that the placeholder
// template.yaml seeds the secret with is refused (ErrPlaceholder), not sent.
func GuardPlaceholder(ts TokenSource) TokenSource { return placeholderGuard{ts} }

// placeholderGuard refuses the placeholder template.yaml seeds the secret
// with, so no request carries it.
type placeholderGuard struct{ TokenSource }

func (g placeholderGuard) Get(ctx context.Context) (string, error) {
	v, err := g.TokenSource.Get(ctx)
	return app.RefusePlaceholder(v, err, ErrPlaceholder)
}
