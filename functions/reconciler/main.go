// Command reconciler is the scheduled Lambda that resolves incidents whose
// closing webhook never came (DESIGN §9): it lists the open incidents of
// the state table, asks Buildkite's REST API about their branches, and
// queues resolves to the event queue. Wiring only; the logic is in
// internal/reconciler.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

func main() {
	log := app.NewLogger(os.Stderr)

	env := config.NewReader(os.LookupEnv)
	cfg := reconciler.LoadSettings(env)
	if err := env.Err(); err != nil {
		app.Exit(log, err)
	}
	api, err := buildkiteapi.RequireFromEnv(env, cfg.SecretTTL, app.LambdaAWSConfig, log)
	if err != nil {
		app.Exit(log, err)
	}
	awsCfg, err := app.LambdaAWSConfig()
	if err != nil {
		app.Exit(log, err)
	}

	open := reconciler.FromState(dynamo.New(dynamo.NewClient(awsCfg), cfg.StateTable))
	pub := queue.NewSQSPublisher(app.SQSClient(awsCfg, queue.SQSOptions), cfg.QueueURL)
	r := reconciler.New(open, api, api, pub, reconciler.Options{Log: log})
	h := reconciler.Lambda{R: r, Metrics: metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME"))}
	lambda.Start(h.Handle)
}
