package reconciler

import (
	"errors"
	"fmt"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

// Deps are the reconciler's parts that may come from elsewhere than its
// environment: make dev's stack and the tests put local stand-ins here. A
// nil part is built from the environment, as in Lambda.
type Deps struct {
	app.Base
	// API is the Buildkite REST API client. nil: from BUILDKITE_API_*,
	// required.
	API *buildkiteapi.Client
	// State lists the open incidents. nil: the DynamoDB table at
	// STATE_TABLE (then required).
	State StateLister
	// Publisher queues the resolves. nil: SQS at QUEUE_URL (then required).
	Publisher queue.Publisher
}

// ErrNoAPI means the reconciler was asked for without a Buildkite API.
var ErrNoAPI = errors.New("the reconciler needs a Buildkite API token")

// FromEnv is the reconciler's one wiring (DESIGN §9): its settings from env,
// its clients, its scheduled handler. functions/reconciler, make dev's
// stack and the tests all build it here.
func FromEnv(env config.Env, d Deps) (*Lambda, error) {
	r := config.NewReader(env)
	ttl := secret.LoadTTL(r)
	pullRequests := incident.LoadRules(r).PullRequests
	var table, queueURL string
	if d.State == nil {
		table = r.Required("STATE_TABLE")
	}
	if d.Publisher == nil {
		queueURL = r.Required("QUEUE_URL")
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	api := d.API
	if api == nil {
		var err error
		if api, err = buildkiteapi.FromEnv(r, ttl, d.AWSConfig(), d.Logger()); err != nil {
			return nil, err
		}
		if api == nil {
			return nil, fmt.Errorf("config: %s or %s is required: %w", app.BuildkiteAPITokenVars.ARNVar, app.BuildkiteAPITokenVars.LiteralVar, ErrNoAPI)
		}
	}
	store, pub := d.State, d.Publisher
	if store == nil || pub == nil {
		awsCfg, err := d.AWSConfig()()
		if err != nil {
			return nil, err
		}
		if store == nil {
			store = dynamo.FromConfig(awsCfg, table)
		}
		if pub == nil {
			pub = queue.NewSQSPublisher(app.SQSClient(awsCfg, queue.SQSOptions), queueURL)
		}
	}
	rec := New(FromState(store), api, api, pub, Options{Log: d.Logger(), PullRequests: pullRequests})
	return &Lambda{R: rec, Metrics: d.Metrics}, nil
}

// LambdaHandler is the reconciler's Lambda handler, all of it from env
// (app.Lambda's build).
func LambdaHandler(env config.Env, b app.Base) (any, error) {
	h, err := FromEnv(env, Deps{Base: b})
	if err != nil {
		return nil, err
	}
	return h.Handle, nil
}
