// Command reconciler is the scheduled Lambda that resolves incidents whose
// closing webhook never came (DESIGN §9): it lists the open incidents of
// the state table, asks Buildkite's REST API about their branches, and
// queues resolves to the event queue. Wiring only: internal/wire builds the
// handler from the environment, internal/reconciler is the logic.
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
	h, err := wire.Reconciler(os.LookupEnv, wire.ReconcilerDeps{Base: wire.Base{
		Log: log, Metrics: metrics.New(os.Stdout, os.Getenv("AWS_LAMBDA_FUNCTION_NAME")),
	}})
	if err != nil {
		app.Exit(log, err)
	}
	lambda.Start(h.Handle)
}
