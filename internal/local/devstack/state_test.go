package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// waitLogs waits until the logs hold s n times: for events that are, by
// design, never sent, the log line is all there is to wait for.
func (h *harness) waitLogs(s string, n int) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(h.logs.String(), s) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("waiting for %d × %s in the logs:\n%s", n, s, h.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitOpen waits until the state lists n open incidents and returns them.
func (h *harness) waitOpen(n int) []state.Item {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		open, err := h.s.State.ListOpen(context.Background())
		if err != nil {
			h.t.Fatal(err)
		}
		if len(open) == n || time.Now().After(deadline) {
			return open
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failing is build.failing of build n, failing at minute m of the fixture's hour.
func failing(t *testing.T, n, m int) []byte {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(payload(t, "build_failing.json", n, "failing", "main"), &p); err != nil {
		t.Fatal(err)
	}
	p["build"].(map[string]any)["failing_at"] = fmt.Sprintf("2024-08-05T11:%02d:00.000Z", m)
	b, _ := json.Marshal(p)
	return b
}

// stateScenario is the incident state end to end (issue 11), with
// ALERT_AFTER_FAILURES=2: what SQIBS sees, and what the store lists.
func stateScenario(t *testing.T, h *harness) {
	const id = "acme/deploy-api/main"
	rec := &recorder{}
	h.s.Sim.SetFault(rec.hook())
	calls := func(want ...string) {
		t.Helper()
		if got := rec.list(); !slices.Equal(got, want) {
			t.Errorf("SQIBS saw %v; want %v", got, want)
		}
	}
	ctx := context.Background()

	h.mustQueue(payload(t, "build_finished_failed.json", 10, "failed", "main"))
	h.waitLogs(`"reason":"below_threshold"`, 1)
	calls()
	h.mustQueue(payload(t, "build_finished_failed.json", 11, "failed", "main"))
	h.wait("the second failure opens", func(s *sqibssim.Server) bool { _, ok := s.Open(id); return ok })
	open := h.waitOpen(1) // written once SQIBS answered
	if len(open) != 1 || open[0].ID != id || open[0].Failures != 2 || open[0].Order.Build != 11 {
		t.Errorf("open incidents %+v; want %s after 2 failures", open, id)
	}

	h.mustQueue(payload(t, "build_finished_passed.json", 13, "passed", "main"))
	h.wait("#13 resolves", func(s *sqibssim.Server) bool { _, ok := s.Open(id); return !ok })
	// An older build, and a late build.failing of it: both stale.
	h.mustQueue(payload(t, "build_finished_failed.json", 12, "failed", "main"))
	h.mustQueue(failing(t, 12, 59))
	h.waitLogs(`"reason":"stale"`, 2)
	// A pass after a pass.
	h.mustQueue(payload(t, "build_finished_passed.json", 14, "passed", "main"))
	h.waitLogs(`"reason":"not_open"`, 1)
	calls(id+" FAILED #11", id+" PASSED #13")
	if open, err := h.s.State.ListOpen(ctx); err != nil || len(open) != 0 { // #14 was processed after #13's write
		t.Errorf("open incidents after the resolve: %+v, %v", open, err)
	}
	if in := h.s.Sim.Incidents(); len(in) != 1 || in[0].Status != sqibssim.StatusResolved {
		t.Errorf("incidents %+v; want the one, resolved", in)
	}
	if !strings.Contains(h.logs.String(), `"time_to_recovery_s":`) {
		t.Error("no time_to_recovery_s metric")
	}
}

func TestEndToEndStateInProcess(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "e2e-token", "ALERT_AFTER_FAILURES": "2"}, "e2e-token")
	if _, ok := h.s.State.(*memstate.Store); !ok {
		t.Fatalf("STATE_TABLE unset: state in %T, want the in-process store", h.s.State)
	}
	stateScenario(t, h)
}

// The same through DynamoDB on moto (the queue in process: TestEndToEndMoto
// runs the SQS scenario with the table too).
func TestEndToEndStateDynamoDB(t *testing.T) {
	m := moto.Start(t)
	if err := dynamo.CreateTable(t.Context(), m.DynamoDB(t), "e2e-incidents"); err != nil {
		t.Fatal(err)
	}
	h := start(t, map[string]string{
		"BUILDKITE_WEBHOOK_TOKEN": "e2e-token", "ALERT_AFTER_FAILURES": "2",
		"STATE_TABLE": "e2e-incidents", "AWS_REGION": "us-east-1",
	}, "e2e-token")
	if st, ok := h.s.State.(*dynamo.Store); !ok || st.Table() != "e2e-incidents" {
		t.Fatalf("STATE_TABLE set: state in %T, want DynamoDB", h.s.State)
	}
	stateScenario(t, h)
}
