// Package app holds the start-up plumbing both functions and the dev server
// share: the JSON logger, the AWS config, token sources from the
// environment, and the one-line exit on bad configuration.
package app

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/callgoose/buildkite-sqibs/internal/awsenv"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/lambdalog"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
)

// NewLogger is the JSON logger every component writes with. The level comes
// from AWS_LAMBDA_LOG_LEVEL (set by Lambda's LoggingConfig) or LOG_LEVEL.
func NewLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	for _, name := range []string{"AWS_LAMBDA_LOG_LEVEL", "LOG_LEVEL"} {
		if v := os.Getenv(name); v != "" {
			_ = level.UnmarshalText([]byte(strings.ToUpper(v)))
			break
		}
	}
	// service and function_name on every line, as Lambda Powertools writes them.
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).
		With(lambdalog.Static(os.Getenv("AWS_LAMBDA_FUNCTION_NAME"))...)
}

// Exit logs err as one (JSON) line and stops the process: bad configuration
// must be loud and early, not a string of failed invocations.
func Exit(log *slog.Logger, err error) {
	log.Error(err.Error())
	os.Exit(1)
}

// LambdaAWSConfig is the SDK configuration of a function, from the
// environment Lambda provides (see internal/awsenv for why not
// config.LoadDefaultConfig).
func LambdaAWSConfig() (aws.Config, error) { return awsenv.Load(os.LookupEnv) }

// SQSClient is an SQS client honouring AWS_ENDPOINT_URL_SQS (moto,
// LocalStack) whichever loader built cfg.
func SQSClient(cfg aws.Config, opts ...func(*sqs.Options)) *sqs.Client {
	if ep := awsenv.Endpoint(os.LookupEnv, "SQS"); ep != nil {
		opts = append(opts, func(o *sqs.Options) { o.BaseEndpoint = ep })
	}
	return sqs.NewFromConfig(cfg, opts...)
}

// SecretsClient is a Secrets Manager client honouring
// AWS_ENDPOINT_URL_SECRETS_MANAGER.
func SecretsClient(cfg aws.Config) *secretsmanager.Client {
	return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if ep := awsenv.Endpoint(os.LookupEnv, "Secrets Manager"); ep != nil {
			o.BaseEndpoint = ep
		}
	})
}

// TokenSpec names the two ways a token can be configured.
type TokenSpec struct {
	LiteralVar string // e.g. BUILDKITE_WEBHOOK_TOKEN: wins when set
	ARNVar     string // e.g. WEBHOOK_TOKEN_SECRET_ARN
}

// Configured reports whether either variable is set (not blank).
func (s TokenSpec) Configured(r *config.Reader) bool { return r.Has(s.LiteralVar) || r.Has(s.ARNVar) }

// The tokens of DESIGN §2, named once. The Buildkite API token is
// optional: Token returns nil without it, and enrichment and
// reconciliation are off (§9).
var (
	WebhookTokenVars      = TokenSpec{LiteralVar: "BUILDKITE_WEBHOOK_TOKEN", ARNVar: "WEBHOOK_TOKEN_SECRET_ARN"}
	SQIBSTokenVars        = TokenSpec{LiteralVar: "SQIBS_API_TOKEN", ARNVar: "SQIBS_TOKEN_SECRET_ARN"}
	BuildkiteAPITokenVars = TokenSpec{LiteralVar: incident.APITokenVar, ARNVar: incident.APITokenARNVar}
)

// Token returns the token source the environment configures, or nil when it
// configures none. A literal wins over the secret. aws is called only when a
// secret must be read, so a literal-only setup needs no AWS config. log gets
// the secret's warnings (a failed refresh): the function's JSON logger, so
// nothing goes to slog.Default's plain text.
func Token(r *config.Reader, spec TokenSpec, ttl time.Duration, aws func() (aws.Config, error), log *slog.Logger) (*secret.Source, error) {
	if v := r.Secret(spec.LiteralVar); v != "" {
		return secret.Literal(v), nil
	}
	arn := r.String(spec.ARNVar, "")
	if arn == "" {
		return nil, nil
	}
	cfg, err := aws()
	if err != nil {
		return nil, err
	}
	return secret.FromSecretsManager(SecretsClient(cfg), arn, ttl, secret.WithLogger(log)), nil
}

// Base is what every function's wiring runs with (receiver.FromEnv,
// dispatcher.FromEnv, reconciler.FromEnv).
type Base struct {
	// AWS loads the SDK configuration when a client is needed (never with
	// local stand-ins for every AWS part). nil: LambdaAWSConfig, from the
	// variables Lambda sets.
	AWS     func() (aws.Config, error)
	Log     *slog.Logger
	Metrics *metrics.Emitter // nil writes none
}

// AWSConfig is b.AWS, or LambdaAWSConfig when none is set.
func (b Base) AWSConfig() func() (aws.Config, error) {
	if b.AWS == nil {
		return LambdaAWSConfig
	}
	return b.AWS
}

// Logger is b.Log, or one that discards.
func (b Base) Logger() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

// Lambda runs one function in AWS Lambda: the JSON logger, the metrics,
// the handler built from the process's environment by build (a bad value
// stops the process with one line naming the variable), then the runtime
// loop. Each function's main is one call to it with that function's
// LambdaHandler, so the three are wired the same way and only with what
// each links.
func Lambda(build func(env config.Env, b Base) (handler any, err error)) {
	log := NewLogger(os.Stderr)
	h, err := build(os.LookupEnv, Base{Log: log, Metrics: metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME"))})
	if err != nil {
		Exit(log, err)
	}
	lambda.Start(h)
}
