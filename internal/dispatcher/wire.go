package dispatcher

import (
	"net/http"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

// Deps are the dispatcher's parts that may come from elsewhere than its
// environment: make dev's stack and the tests put local stand-ins here. A
// nil part is built from the environment, as in Lambda.
type Deps struct {
	app.Base
	// SQIBSTokens is the SQIBS API token. nil: SQIBS_API_TOKEN or
	// SQIBS_TOKEN_SECRET_ARN, one of them required.
	SQIBSTokens *secret.Source
	// API is the Buildkite REST API client. nil: from BUILDKITE_API_*
	// (no token: enrichment and parent builds off).
	API *buildkiteapi.Client
	// Visibility delays a retry. nil: SQS ChangeMessageVisibility.
	Visibility Visibility
	// DeadLetters parks what can never succeed. nil: the SQS queue at
	// DLQ_URL, or the queue's own redrive policy without one.
	DeadLetters DeadLetters
	// State is the incident state. nil: the DynamoDB table at STATE_TABLE,
	// or no state without one.
	State Store
	// HTTPClient reaches SQIBS. nil: the tuned default (internal/httpclient).
	HTTPClient *http.Client
	// Tune adjusts the handler's settings after they are read (tests and
	// make dev compress the backoff clock with it).
	Tune func(*Config)
}

// FromEnv is the dispatcher's one wiring (DESIGN §2, dispatcher): its
// settings from env, its clients, its handler. functions/dispatcher, make
// dev's stack and the tests all build it here.
func FromEnv(env config.Env, d Deps) (*Handler, error) {
	r := config.NewReader(env)
	cfg := LoadSettings(r)
	if err := r.Err(); err != nil {
		return nil, err
	}
	var tokens sqibs.TokenSource
	if d.SQIBSTokens != nil {
		tokens = app.GuardSQIBSToken(d.SQIBSTokens)
	} else {
		var err error
		if tokens, err = app.SQIBSToken(r, cfg.SecretTTL, d.AWSConfig(), d.Logger()); err != nil {
			return nil, err
		}
	}
	client, err := sqibs.New(cfg.SQIBS, tokens, d.HTTPClient)
	if err != nil {
		return nil, err
	}
	api := d.API
	if api == nil {
		if api, err = buildkiteapi.FromEnv(r, cfg.SecretTTL, d.AWSConfig(), d.Logger()); err != nil {
			return nil, err
		}
	}
	if api != nil { // keep a nil *Client from becoming a non-nil interface
		// What a configured token does: enrich, judge triggered builds by
		// their parent, and count the API's time in the delivery budget.
		cfg.Handler.API = api
		cfg.Handler.Rules.TriggeredByParent = true
		cfg.Handler.Reserve = DeliveryBudget(cfg.SQIBS.Timeout, true)
	}

	vis, dlq, store := d.Visibility, d.DeadLetters, d.State
	if vis == nil || (dlq == nil && cfg.DLQURL != "") || (store == nil && cfg.StateTable != "") {
		awsCfg, err := d.AWSConfig()()
		if err != nil {
			return nil, err
		}
		sqsClient := app.SQSClient(awsCfg) // the SDK's own retries: not on the webhook path
		if vis == nil {
			vis = &queue.SQSVisibility{API: sqsClient}
		}
		if dlq == nil && cfg.DLQURL != "" {
			dlq = &queue.SQSDeadLetter{API: sqsClient, URL: cfg.DLQURL}
		}
		if store == nil && cfg.StateTable != "" {
			store = dynamo.FromConfig(awsCfg, cfg.StateTable)
		}
	}
	cfg.Handler.State = store
	if d.Tune != nil {
		d.Tune(&cfg.Handler)
	}
	return New(cfg.Handler, client, vis, dlq, d.Logger(), d.Metrics), nil
}

// LambdaHandler is the dispatcher's Lambda handler, all of it from env
// (app.Lambda's build).
func LambdaHandler(env config.Env, b app.Base) (any, error) {
	h, err := FromEnv(env, Deps{Base: b})
	if err != nil {
		return nil, err
	}
	return h.Handle, nil
}
