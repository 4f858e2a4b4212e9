// Command receiver is the Lambda behind the function URL: it authenticates
// Buildkite webhooks and queues them to SQS FIFO. Wiring only; the logic is
// in internal/receiver.
package main

import (
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/receiver"
)

func main() {
	log := app.NewLogger(os.Stderr)

	env := config.NewReader(os.LookupEnv)
	cfg := receiver.LoadConfig(env)
	queueURL := env.Required("QUEUE_URL")
	ttl := env.Duration("SECRET_TTL", 5*time.Minute)
	if err := env.Err(); err != nil {
		app.Exit(log, err)
	}

	awsCfg, err := app.LambdaAWSConfig()
	if err != nil {
		app.Exit(log, err)
	}
	tokens, err := app.Token(env, app.WebhookTokenVars, ttl,
		func() (aws.Config, error) { return awsCfg, nil }, log)
	if err != nil {
		app.Exit(log, err)
	}
	var ts receiver.TokenSource
	if tokens != nil { // keep a nil *Source from becoming a non-nil interface
		ts = tokens
	}

	pub := queue.NewSQSPublisher(app.SQSClient(awsCfg, queue.SQSOptions), queueURL)
	h := receiver.New(cfg, ts, pub, log, metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME")))
	lambda.Start(h.Handle)
}
