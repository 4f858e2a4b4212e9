package receiver

import (
	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
)

// Deps are the receiver's parts that may come from elsewhere than its
// environment: make dev's stack and the tests put local stand-ins here. A
// nil part is built from the environment, as in Lambda.
type Deps struct {
	app.Base
	// Tokens are the webhook token(s). nil: BUILDKITE_WEBHOOK_TOKEN or
	// WEBHOOK_TOKEN_SECRET_ARN; neither = every webhook refused (fail closed).
	Tokens *secret.Source
	// Publisher queues events. nil: SQS at QUEUE_URL (then required).
	Publisher queue.Publisher
	// BuildkiteAPI says the dispatcher has a Buildkite API client although
	// no token variable is set (make dev's simulator and its default
	// token): triggered builds are then left to it, as in Lambda with one.
	BuildkiteAPI bool
}

// FromEnv is the receiver's one wiring (DESIGN §2, receiver): its settings
// from env, its token source and queue, its handler. functions/receiver,
// make dev's stack and the tests all build it here.
func FromEnv(env config.Env, d Deps) (*Handler, error) {
	r := config.NewReader(env)
	cfg := LoadConfig(r)
	ttl := secret.LoadTTL(r)
	var queueURL string
	if d.Publisher == nil {
		queueURL = r.Required("QUEUE_URL")
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if d.BuildkiteAPI {
		cfg.Rules.TriggeredByParent = true
	}
	tokens := d.Tokens
	if tokens == nil {
		var err error
		if tokens, err = app.Token(r, app.WebhookTokenVars, ttl, d.AWSConfig(), d.Logger()); err != nil {
			return nil, err
		}
	}
	pub := d.Publisher
	if pub == nil {
		awsCfg, err := d.AWSConfig()()
		if err != nil {
			return nil, err
		}
		pub = queue.NewSQSPublisher(app.SQSClient(awsCfg, queue.SQSOptions), queueURL)
	}
	var ts TokenSource
	if tokens != nil { // keep a nil *Source from becoming a non-nil interface
		ts = tokens
	}
	return New(cfg, ts, pub, d.Logger(), d.Metrics), nil
}

// LambdaHandler is the receiver's Lambda handler, all of it from env
// (app.Lambda's build).
func LambdaHandler(env config.Env, b app.Base) (any, error) {
	h, err := FromEnv(env, Deps{Base: b})
	if err != nil {
		return nil, err
	}
	return h.Handle, nil
}
