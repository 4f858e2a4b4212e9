// Command dispatcher is the SQS-fed Lambda: it maps queued Buildkite events
// to SQIBS incidents and delivers them. Wiring only; the logic is in
// internal/dispatcher.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

func main() {
	log := app.NewLogger(os.Stderr)

	env := config.NewReader(os.LookupEnv)
	cfg := dispatcher.LoadSettings(env)
	if err := env.Err(); err != nil {
		app.Exit(log, err)
	}

	tokens, err := app.SQIBSToken(env, cfg.SecretTTL, app.LambdaAWSConfig, log)
	if err != nil {
		app.Exit(log, err)
	}
	client, err := sqibs.New(cfg.SQIBS, tokens, nil)
	if err != nil {
		app.Exit(log, err)
	}
	// nil without a Buildkite API token: enrichment and parents off.
	api, err := buildkiteapi.FromEnv(env, cfg.SecretTTL, app.LambdaAWSConfig, log)
	if err != nil {
		app.Exit(log, err)
	}
	if api != nil { // keep a nil *Client from becoming a non-nil interface
		cfg.Handler.API = api
	}
	awsCfg, err := app.LambdaAWSConfig()
	if err != nil {
		app.Exit(log, err)
	}

	sqsClient := app.SQSClient(awsCfg)
	var dlq dispatcher.DeadLetters
	if cfg.DLQURL != "" {
		dlq = &queue.SQSDeadLetter{API: sqsClient, URL: cfg.DLQURL}
	}
	if cfg.StateTable != "" {
		cfg.Handler.State = dynamo.New(dynamo.NewClient(awsCfg), cfg.StateTable)
	}

	m := metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME"))
	h := dispatcher.New(cfg.Handler, client, &queue.SQSVisibility{API: sqsClient}, dlq, log, m)
	lambda.Start(h.Handle)
}
