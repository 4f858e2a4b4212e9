// Command reconciler is the scheduled Lambda that resolves incidents whose
// closing webhook never came (DESIGN §9): it lists the open incidents of
// the state table, asks Buildkite's REST API about their branches, and
// queues resolves to the event queue. Wiring only: reconciler.FromEnv builds the
// handler from the environment, internal/reconciler is the logic.
package main

import (
	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
)

func main() { app.Lambda(reconciler.LambdaHandler) }
