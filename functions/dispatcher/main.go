// Command dispatcher is the SQS-fed Lambda: it maps queued Buildkite events
// to SQIBS incidents and delivers them. Wiring only: internal/wire builds
// the handler from the environment, internal/dispatcher is the logic.
package main

import "github.com/callgoose/buildkite-sqibs/internal/wire"

func main() { wire.Lambda(wire.DispatcherHandler) }
