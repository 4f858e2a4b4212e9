package devstack

import (
	"context"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// SQIBS answers 503 to everything for five minutes under steady traffic,
// then recovers (a minute is a second here): nothing is dead-lettered
// inside RETRY_FOR, and everything is delivered, once and in order, soon
// after the recovery. (make bench times the same drill with 10 minutes:
// recovery_drain_s.)
func TestOutage(t *testing.T) {
	fixture := testkit.Fixture(t, "build_finished_failed.json")
	logs := &testkit.Buffer{}
	res, err := RunOutage(context.Background(), OutageOptions{Fixture: fixture, Incidents: 12, Outage: 5 * time.Minute, Stderr: logs})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d webhooks, %d queued before the recovery, %d SQIBS calls refused; the backlog drained %s after the recovery (real-world)",
		res.Sent, res.Backlog, res.Refused, res.Drain.Round(time.Second))
	if res.Backlog < 12*5 || res.Refused < res.Backlog {
		t.Errorf("%d events queued in the outage, %d calls refused: the drill did not hold a backlog", res.Backlog, res.Refused)
	}
	if len(res.DeadLetters) != 0 {
		t.Errorf("%d dead letters within RETRY_FOR, first %+v", len(res.DeadLetters), res.DeadLetters[0])
	}
	for _, m := range res.Missing {
		t.Errorf("never delivered: %s", m)
	}
	for _, o := range res.OutOfOrder {
		t.Errorf("out of order: %s", o)
	}
	if res.Repeats != 0 {
		t.Errorf("%d events delivered twice", res.Repeats)
	}
	// Every waiting head is retried within MAX_BACKOFF of the recovery; the
	// bound is loose (a loaded machine is slow on the compressed clock) but
	// far under what the old 900 s cap allowed.
	if limit := 5 * dispatcher.DefaultMaxBackoff; res.Drain == 0 || res.Drain > limit {
		t.Errorf("backlog drained %s after the recovery, want within %s", res.Drain, limit)
	}
	if t.Failed() {
		t.Logf("logs: %.4000s", logs.String())
	}
}
