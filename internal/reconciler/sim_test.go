package reconciler

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/local/buildkitesim"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

const simToken = "bkua_reconciler-TEST-token"

// simStack is the reconciler with the real client against the simulator.
type simStack struct {
	sim  *buildkitesim.Server
	pub  *testkit.Publisher[queue.Message]
	logs *bytes.Buffer
	r    *Reconciler
}

func newSimStack(t *testing.T, incs []Incident, o Options) *simStack {
	t.Helper()
	sim := buildkitesim.New(simToken)
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); srv.Close() })
	c, err := buildkiteapi.New(buildkiteapi.Config{BaseURL: srv.URL + "/v2", Timeout: time.Second}, testkit.Token(simToken), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &simStack{sim: sim, pub: &testkit.Publisher[queue.Message]{}, logs: &bytes.Buffer{}}
	o.Log = slog.New(slog.NewJSONHandler(st.logs, nil))
	o.Shuffle = func(int, func(i, j int)) {}
	st.r = New(&fakeOpen{list: incs}, c, c, st.pub, o)
	return st
}

// webhook parses a fixture of internal/buildkite/testdata as build n.
func webhook(t *testing.T, name string, n int64, state string, finished time.Time) *buildkite.Payload {
	t.Helper()
	p := testkit.Webhook(t, name)
	p.Build.Number, p.Build.State, p.Build.ID = n, state, fmt.Sprintf("build-%d", n)
	p.Build.WebURL = fmt.Sprintf("https://buildkite.com/acme/deploy-api/builds/%d", n)
	p.Build.FinishedAt = buildkite.Time{Time: finished}
	return p
}

var failedAt = time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)

func deployAPI(branch string) Incident {
	return Incident{ID: "acme/deploy-api/" + branch, Org: "acme", Pipeline: "deploy-api", Branch: branch, FailedBuild: 1234, FailedAt: failedAt}
}

func TestAgainstSimulator(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(s *buildkitesim.Server)
		want   Summary
		reason string
	}{
		{"the passed build's webhook was lost: resolved from the API", func(s *buildkitesim.Server) {
			s.Record(webhook(t, "build_finished_passed.json", 1235, "passed", failedAt.Add(time.Hour)))
		}, Summary{Checked: 1, Resolved: 1, Calls: 1}, ReasonPassed},
		{"still failing", func(s *buildkitesim.Server) {
			s.Record(webhook(t, "build_finished_failed.json", 1235, "failed", failedAt.Add(time.Hour)))
		}, Summary{Checked: 1, StillFailing: 1, Calls: 1}, ""},
		{"a blocked newer build is not a pass", func(s *buildkitesim.Server) {
			s.Record(webhook(t, "build_finished_blocked.json", 1235, "passed", time.Time{}))
		}, Summary{Checked: 1, StillFailing: 1, Calls: 1}, ""},
		{"the pipeline is gone", func(s *buildkitesim.Server) { s.Forget("acme", "deploy-api") },
			Summary{Checked: 1, NotFound: 1, Calls: 2}, ReasonPipelineGone},
		{"429 with a far reset: stop", func(s *buildkitesim.Server) {
			s.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault {
				return &buildkitesim.Fault{Reset: 40 * time.Second}
			})
		}, Summary{RateLimited: 1, Unchecked: 1, Calls: 1}, ""},
		{"the API is down", func(s *buildkitesim.Server) {
			s.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault { return &buildkitesim.Fault{Status: 503} })
		}, Summary{Checked: 1, Errors: 1, Calls: 1}, ""},
		{"the API is slow: the client's timeout", func(s *buildkitesim.Server) {
			s.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault {
				return &buildkitesim.Fault{Delay: 3 * time.Second}
			})
		}, Summary{Checked: 1, Errors: 1, Calls: 1}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inc := deployAPI("main")
			st := newSimStack(t, []Incident{inc}, Options{})
			st.sim.Record(webhook(t, "build_finished_failed.json", 1234, "failed", failedAt))
			tc.setup(st.sim)
			got, err := st.r.Run(context.Background(), "run-1", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			got.FirstError, got.Duration = "", 0
			if got != tc.want {
				t.Errorf("summary %+v\n want %+v", got, tc.want)
			}
			if (st.pub.Len() == 1) != (tc.reason != "") {
				t.Fatalf("%d messages, want reason %q", st.pub.Len(), tc.reason)
			}
			if tc.reason != "" {
				mapsToResolve(t, st.pub.Messages()[0], inc, tc.reason)
				body := string(st.pub.Messages()[0].Body)
				for _, s := range []string{"@", simToken, "SECRET", "creator", "env"} {
					if strings.Contains(body, s) {
						t.Errorf("the queued resolve holds %q: %s", s, body)
					}
				}
			}
			if strings.Contains(st.logs.String(), simToken) {
				t.Error("the log holds the token")
			}
			summaryLine(t, st.logs)
		})
	}
}

// TestSimulatorRateLimit runs more incidents than the per-user window
// allows: the client stops at the window's last call, the reconciler stops
// there too and leaves the rest for the next run.
func TestSimulatorRateLimit(t *testing.T) {
	var incs []Incident
	for i := range 10 {
		incs = append(incs, deployAPI(fmt.Sprintf("b%d", i)))
	}
	st := newSimStack(t, incs, Options{})
	st.sim.SetLimits(buildkitesim.DefaultOrgLimit, 4)
	for i := range 10 {
		p := webhook(t, "build_finished_failed.json", int64(1234+i), "failed", failedAt)
		p.Build.Branch = fmt.Sprintf("b%d", i)
		st.sim.Record(p)
	}
	got, err := st.r.Run(context.Background(), "run-1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Checked != 4 || got.StillFailing != 4 || got.RateLimited != 1 || got.Unchecked != 6 || got.Calls != 4 || st.sim.Calls() != 4 {
		t.Errorf("summary %+v, simulator calls %d", got, st.sim.Calls())
	}
}
