// Command dispatcher is the SQS-fed Lambda: it maps queued Buildkite events
// to SQIBS incidents and delivers them. Wiring only: internal/dispatcher's
// FromEnv builds the handler from the environment, internal/dispatcher is the logic.
package main

import (
	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
)

func main() { app.Lambda(dispatcher.LambdaHandler) }
