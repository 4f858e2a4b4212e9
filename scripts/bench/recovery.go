package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/local/devstack"
	"github.com/callgoose/buildkite-sqibs/internal/local/tailbuf"
)

// recoveryScale compresses the outage drill: a real-world minute takes a
// second, so the 10-minute outage runs in about 15 s.
const recoveryScale = 1.0 / 60

// recovery runs devstack's outage drill (steady traffic to 20 incidents, one
// webhook a minute each; SQIBS answers 503 to everything for 10 minutes,
// then recovers) with the default MAX_BACKOFF, and reports recovery_drain_s:
// real-world seconds from the recovery to the delivery of the last event
// queued before it.
func recovery(ctx context.Context, root string, res *Results) error {
	fixture, err := os.ReadFile(filepath.Join(root, "internal", "buildkite", "testdata", "build_finished_failed.json"))
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	logs := &tailbuf.Buffer{}
	r, err := devstack.RunOutage(ctx, devstack.OutageOptions{Fixture: fixture, Outage: 10 * time.Minute, Scale: recoveryScale, Stderr: logs})
	if err != nil {
		return fmt.Errorf("recovery: %w; last logs: %s", err, logs.String())
	}
	var problems []string
	if len(r.DeadLetters) > 0 {
		problems = append(problems, fmt.Sprintf("%d dead letters", len(r.DeadLetters)))
	}
	if len(r.Missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d events never delivered", len(r.Missing)))
	}
	if len(r.OutOfOrder) > 0 {
		problems = append(problems, fmt.Sprintf("%d incidents out of order", len(r.OutOfOrder)))
	}
	if r.Repeats > 0 {
		problems = append(problems, fmt.Sprintf("%d events delivered twice", r.Repeats))
	}
	if len(problems) > 0 || r.Drain == 0 {
		return fmt.Errorf("recovery: the drill went wrong (%s; drain %s): no figure", strings.Join(problems, ", "), r.Drain)
	}
	res.set("recovery_drain_s", r.Drain.Seconds())
	res.note("recovery_drain_s: SQIBS answered 503 to everything for 10 minutes while 20 incidents got a webhook a minute each (%d queued in the outage, %d SQIBS calls refused), then recovered; MAX_BACKOFF %s. Time compressed %.0f×: backoffs, MAX_BACKOFF, RETRY_FOR and the visibility timeout on a clock %.0f× as fast; the figure is converted back to real-world seconds, so the stack's own few milliseconds per retry count %.0f× too (it errs high)",
		r.Backlog, r.Refused, dispatcher.DefaultMaxBackoff, 1/recoveryScale, 1/recoveryScale, 1/recoveryScale)
	return nil
}
