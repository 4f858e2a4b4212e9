// Package wire builds each function's handler from its environment: the
// one place where configuration meets clients. The Lambda mains call it
// with AWS for everything; make dev's stack (internal/local/devstack) and the
// tests call it with local stand-ins where they own a part (the queue, the
// incident state, a token), so the same settings, defaults and checks run
// everywhere and a variable is read in one place only.
//
// A nil dependency is built from the environment as Lambda does.
package wire

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/receiver"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

// Base is what every function runs with.
type Base struct {
	// AWS loads the SDK configuration when a client is needed (never with
	// local stand-ins for every AWS part). nil: app.LambdaAWSConfig, from
	// the variables Lambda sets.
	AWS     func() (aws.Config, error)
	Log     *slog.Logger
	Metrics *metrics.Emitter // nil writes none
}

func (b Base) aws() func() (aws.Config, error) {
	if b.AWS == nil {
		return app.LambdaAWSConfig
	}
	return b.AWS
}

func (b Base) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

// ReceiverDeps are the receiver's parts that may come from elsewhere.
type ReceiverDeps struct {
	Base
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

// Receiver is the receiver's handler, from env (DESIGN §2, receiver).
func Receiver(env config.Env, d ReceiverDeps) (*receiver.Handler, error) {
	r := config.NewReader(env)
	cfg := receiver.LoadConfig(r)
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
		if tokens, err = app.Token(r, app.WebhookTokenVars, ttl, d.aws(), d.log()); err != nil {
			return nil, err
		}
	}
	pub := d.Publisher
	if pub == nil {
		cfg, err := d.aws()()
		if err != nil {
			return nil, err
		}
		pub = queue.NewSQSPublisher(app.SQSClient(cfg, queue.SQSOptions), queueURL)
	}
	var ts receiver.TokenSource
	if tokens != nil { // keep a nil *Source from becoming a non-nil interface
		ts = tokens
	}
	return receiver.New(cfg, ts, pub, d.log(), d.Metrics), nil
}

// DispatcherDeps are the dispatcher's parts that may come from elsewhere.
type DispatcherDeps struct {
	Base
	// SQIBSTokens is the SQIBS API token. nil: SQIBS_API_TOKEN or
	// SQIBS_TOKEN_SECRET_ARN, one of them required.
	SQIBSTokens *secret.Source
	// API is the Buildkite REST API client. nil: from BUILDKITE_API_*
	// (no token: enrichment and parent builds off).
	API *buildkiteapi.Client
	// Visibility delays a retry. nil: SQS ChangeMessageVisibility.
	Visibility dispatcher.Visibility
	// DeadLetters parks what can never succeed. nil: the SQS queue at
	// DLQ_URL, or the queue's own redrive policy without one.
	DeadLetters dispatcher.DeadLetters
	// State is the incident state. nil: the DynamoDB table at STATE_TABLE,
	// or no state without one.
	State dispatcher.Store
	// HTTPClient reaches SQIBS. nil: the tuned default (internal/httpclient).
	HTTPClient *http.Client
	// Tune adjusts the handler's settings after they are read (tests and
	// make dev compress the backoff clock with it).
	Tune func(*dispatcher.Config)
}

// Dispatcher is the dispatcher's handler, from env (DESIGN §2, dispatcher).
func Dispatcher(env config.Env, d DispatcherDeps) (*dispatcher.Handler, error) {
	r := config.NewReader(env)
	cfg := dispatcher.LoadSettings(r)
	if err := r.Err(); err != nil {
		return nil, err
	}
	var tokens sqibs.TokenSource
	if d.SQIBSTokens != nil {
		tokens = app.GuardSQIBSToken(d.SQIBSTokens)
	} else {
		var err error
		if tokens, err = app.SQIBSToken(r, cfg.SecretTTL, d.aws(), d.log()); err != nil {
			return nil, err
		}
	}
	client, err := sqibs.New(cfg.SQIBS, tokens, d.HTTPClient)
	if err != nil {
		return nil, err
	}
	api := d.API
	if api == nil {
		if api, err = buildkiteapi.FromEnv(r, cfg.SecretTTL, d.aws(), d.log()); err != nil {
			return nil, err
		}
	}
	if api != nil { // keep a nil *Client from becoming a non-nil interface
		// What a configured token does: enrich, judge triggered builds by
		// their parent, and count the API's time in the delivery budget.
		cfg.Handler.API = api
		cfg.Handler.Rules.TriggeredByParent = true
		cfg.Handler.Reserve = dispatcher.DeliveryBudget(cfg.SQIBS.Timeout, true)
	}

	vis, dlq, store := d.Visibility, d.DeadLetters, d.State
	if vis == nil || (dlq == nil && cfg.DLQURL != "") || (store == nil && cfg.StateTable != "") {
		awsCfg, err := d.aws()()
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
			store = StateTable(awsCfg, cfg.StateTable)
		}
	}
	cfg.Handler.State = store
	if d.Tune != nil {
		d.Tune(&cfg.Handler)
	}
	return dispatcher.New(cfg.Handler, client, vis, dlq, d.log(), d.Metrics), nil
}

// StateTable is the DynamoDB incident state table (DESIGN §5b), for the
// dispatcher's guard and the reconciler's list of open incidents.
func StateTable(awsCfg aws.Config, table string) *dynamo.Store {
	return dynamo.New(dynamo.NewClient(awsCfg), table)
}

// ReconcilerDeps are the reconciler's parts that may come from elsewhere.
type ReconcilerDeps struct {
	Base
	// API is the Buildkite REST API client. nil: from BUILDKITE_API_*,
	// required.
	API *buildkiteapi.Client
	// State lists the open incidents. nil: the DynamoDB table at
	// STATE_TABLE (then required).
	State reconciler.StateLister
	// Publisher queues the resolves. nil: SQS at QUEUE_URL (then required).
	Publisher queue.Publisher
}

// ErrNoAPI means the reconciler was asked for without a Buildkite API.
var ErrNoAPI = errors.New("the reconciler needs a Buildkite API token")

// Reconciler is the scheduled reconciler's handler, from env (DESIGN §9).
func Reconciler(env config.Env, d ReconcilerDeps) (*reconciler.Lambda, error) {
	r := config.NewReader(env)
	ttl := secret.LoadTTL(r)
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
		if api, err = buildkiteapi.FromEnv(r, ttl, d.aws(), d.log()); err != nil {
			return nil, err
		}
		if api == nil {
			return nil, fmt.Errorf("config: %s or %s is required: %w", app.BuildkiteAPITokenVars.ARNVar, app.BuildkiteAPITokenVars.LiteralVar, ErrNoAPI)
		}
	}
	store, pub := d.State, d.Publisher
	if store == nil || pub == nil {
		awsCfg, err := d.aws()()
		if err != nil {
			return nil, err
		}
		if store == nil {
			store = StateTable(awsCfg, table)
		}
		if pub == nil {
			pub = queue.NewSQSPublisher(app.SQSClient(awsCfg, queue.SQSOptions), queueURL)
		}
	}
	rec := reconciler.New(reconciler.FromState(store), api, api, pub, reconciler.Options{Log: d.log()})
	return &reconciler.Lambda{R: rec, Metrics: d.Metrics}, nil
}

// Lambda runs one function in AWS Lambda: the JSON logger, the metrics,
// the handler build from the process's environment (a bad value stops the
// process with one line naming the variable), then the runtime loop. The
// mains are one call to it with ReceiverHandler, DispatcherHandler or
// ReconcilerHandler.
func Lambda(build func(env config.Env, b Base) (handler any, err error)) {
	log := app.NewLogger(os.Stderr)
	h, err := build(os.LookupEnv, Base{Log: log, Metrics: metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME"))})
	if err != nil {
		app.Exit(log, err)
	}
	lambda.Start(h)
}

// ReceiverHandler is the receiver's Lambda handler, all of it from env.
func ReceiverHandler(env config.Env, b Base) (any, error) {
	h, err := Receiver(env, ReceiverDeps{Base: b})
	if err != nil {
		return nil, err
	}
	return h.Handle, nil
}

// DispatcherHandler is the dispatcher's Lambda handler, all of it from env.
func DispatcherHandler(env config.Env, b Base) (any, error) {
	h, err := Dispatcher(env, DispatcherDeps{Base: b})
	if err != nil {
		return nil, err
	}
	return h.Handle, nil
}

// ReconcilerHandler is the reconciler's Lambda handler, all of it from env.
func ReconcilerHandler(env config.Env, b Base) (any, error) {
	h, err := Reconciler(env, ReconcilerDeps{Base: b})
	if err != nil {
		return nil, err
	}
	return h.Handle, nil
}
