// Command dispatcher is the SQS-fed Lambda: it maps queued Buildkite events
// to SQIBS incidents and delivers them. Wiring only: internal/wire builds
// the handler from the environment, internal/dispatcher is the logic.
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
	h, err := wire.Dispatcher(os.LookupEnv, wire.DispatcherDeps{Base: wire.Base{
		Log: log, Metrics: metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME")),
	}})
	if err != nil {
		app.Exit(log, err)
	}
	lambda.Start(h.Handle)
}
