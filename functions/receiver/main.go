// Command receiver is the Lambda behind the function URL: it authenticates
// Buildkite webhooks and queues them to SQS FIFO. Wiring only: receiver.FromEnv
// builds the handler from the environment, internal/receiver is the logic.
package main

import (
	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/receiver"
)

func main() { app.Lambda(receiver.LambdaHandler) }
