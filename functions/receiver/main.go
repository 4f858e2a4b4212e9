// Command receiver is the Lambda behind the function URL: it authenticates
// Buildkite webhooks and queues them to SQS FIFO. Wiring only: internal/wire
// builds the handler from the environment, internal/receiver is the logic.
package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/wire"
)

func main() {
	log := app.NewLogger(os.Stderr)
	h, err := wire.Receiver(os.LookupEnv, wire.ReceiverDeps{Base: wire.Base{
		Log: log, Metrics: metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME")),
	}})
	if err != nil {
		app.Exit(log, err)
	}
	lambda.Start(h.Handle)
}
