package deploytest

// The reconciler's scheduled event: in process with the handler built from
// events/env.json, and through the real bootstrap as `make invoke
// FN=reconciler` runs it (state table and queue on moto, the Buildkite API
// simulator over HTTP as make dev serves it).

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/local/buildkitesim"
	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// newReconcilerFn builds the reconciler as functions/reconciler does
// (reconciler.FromEnv), from env with BUILDKITE_API_URL replaced by apiURL, over the
// state open and the queue pub.
func newReconcilerFn(t *testing.T, env map[string]string, apiURL string, open reconciler.StateLister, pub queue.Publisher, logs io.Writer) *reconciler.Lambda {
	t.Helper()
	env = maps.Clone(env)
	env["BUILDKITE_API_URL"] = apiURL
	h, err := reconciler.FromEnv(config.Map(env), reconciler.Deps{State: open, Publisher: pub,
		Base: app.Base{AWS: noAWS, Log: slog.New(slog.NewJSONHandler(logs, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The scenario of every reconciler event: acme/deploy-api/main is open
// since build #1234 failed; #1235 passed, and Buildkite knows it, but its
// webhook never came.
func lostWebhookScenario(t *testing.T, sim *buildkitesim.Server) state.Item {
	t.Helper()
	failed := testkit.Webhook(t, "build_finished_failed.json")
	sim.Record(failed)
	passed := testkit.Webhook(t, "build_finished_passed.json")
	passed.Build.Number, passed.Build.ID = 1235, "0191225a-2f1c-7b6e-9d0a-3c5f1e7b8a91"
	passed.Build.WebURL = "https://buildkite.com/acme/deploy-api/builds/1235"
	passed.Build.FinishedAt.Time = failed.Build.FinishedAt.Add(20 * time.Minute)
	sim.Record(passed)
	now := time.Now().UTC().Truncate(time.Millisecond)
	return state.Item{ID: "acme/deploy-api/main", Open: true, Pipeline: "deploy-api", Branch: "main",
		Order: state.Order{Build: 1234, At: failed.Build.FinishedAt.Time}, OpenedAt: failed.Build.FinishedAt.Time,
		LastStatus: "FAILED", UpdatedAt: now, ExpiresAt: now.Add(state.TTL)}
}

// reconcilerWant checks the outcome of one scheduled event file: what the
// function answered and what it queued.
type reconcilerWant func(t *testing.T, res reconciler.Result, queued []queue.Envelope, groups []string)

var reconcilerWants = map[string]reconcilerWant{
	// The lost pass is found and its resolve queued, in the incident's
	// group, marked as the reconciler's, through the same queue.
	"reconciler-scheduled.json": func(t *testing.T, res reconciler.Result, queued []queue.Envelope, groups []string) {
		if res.Checked != 1 || res.Resolved != 1 || res.Errors != 0 || res.Calls != 1 {
			t.Errorf("result %+v, want one incident checked and resolved with one API call", res)
		}
		if len(queued) != 1 || groups[0] != "acme/deploy-api/main" {
			t.Fatalf("queued %d messages (groups %v), want one resolve of acme/deploy-api/main", len(queued), groups)
		}
		e := queued[0]
		if e.Origin != queue.OriginReconciler || e.Reason != reconciler.ReasonPassed || e.Payload.Build.Number != 1235 ||
			e.Payload.Build.State != "passed" || !strings.HasPrefix(e.RequestID, reconciler.RequestIDPrefix) {
			t.Errorf("queued %+v (build %+v), want the resolve of #1235 from the reconciler", e, e.Payload.Build)
		}
	},
}

func envelopes(t *testing.T, bodies [][]byte) []queue.Envelope {
	t.Helper()
	var out []queue.Envelope
	for _, b := range bodies {
		e, err := queue.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"@", "SECRET-", devstackToken} {
			if strings.Contains(string(b), s) {
				t.Errorf("a queued resolve holds %q: %s", s, b)
			}
		}
		out = append(out, *e)
	}
	return out
}

// devstackToken is events/env.json's BUILDKITE_API_TOKEN for the reconciler.
const devstackToken = "local-buildkite-token"

func TestReconcilerEvents(t *testing.T) {
	env, err := envSection("ReconcilerFunction")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range reconcilerSpecs {
		t.Run(s.file, func(t *testing.T) {
			var ev events.EventBridgeEvent
			readEvent(t, s.file, &ev)
			if ev.DetailType != "Scheduled Event" || ev.Source != "aws.events" {
				t.Fatalf("not a scheduled event: %+v", ev)
			}
			sim := buildkitesim.New(env["BUILDKITE_API_TOKEN"])
			srv := httptest.NewServer(sim)
			t.Cleanup(func() { sim.Close(); srv.Close() })
			st := memstate.New()
			it := lostWebhookScenario(t, sim)
			if err := st.Put(t.Context(), &it); err != nil {
				t.Fatal(err)
			}
			pub := &testkit.Publisher[queue.Message]{}
			var logs testkit.Buffer
			h := newReconcilerFn(t, env, srv.URL+"/v2", st, pub, &logs)
			res, err := h.Handle(t.Context(), ev)
			if err != nil {
				t.Fatal(err)
			}
			var bodies [][]byte
			var groups []string
			for _, m := range pub.Messages() {
				bodies, groups = append(bodies, m.Body), append(groups, m.GroupID)
			}
			reconcilerWants[s.file](t, res, envelopes(t, bodies), groups)
			if strings.Contains(logs.String(), env["BUILDKITE_API_TOKEN"]) || strings.Count(logs.String(), `"msg":"reconcile"`) != 1 {
				t.Errorf("want one summary line and no token in the log:\n%s", logs.String())
			}
		})
	}
}

func TestInvokeReconcilerEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the reconciler: skipped with -short")
	}
	srv := moto.Start(t)
	cfg := srv.AWSConfig(t)
	client := sqs.NewFromConfig(cfg)
	queueURL := moto.CreateFIFO(t, client, "buildkite-sqibs-events.fifo")
	ddb := srv.DynamoDB(t)
	const table = "reconciler-invoke-incidents"
	if err := dynamo.CreateTable(t.Context(), ddb, table); err != nil {
		t.Fatal(err)
	}
	invokeBin, _, _ := binaries(t)
	bin := bootstrap(t, "reconciler")

	sec, err := envSection("ReconcilerFunction")
	if err != nil {
		t.Fatal(err)
	}
	sim := buildkitesim.New(sec["BUILDKITE_API_TOKEN"])
	hs := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); hs.Close() })
	it := lostWebhookScenario(t, sim)
	if err := dynamo.New(ddb, table).Put(t.Context(), &it); err != nil {
		t.Fatal(err)
	}
	env := envFileWith(t, map[string]map[string]string{
		"ReconcilerFunction": {"QUEUE_URL": queueURL, "STATE_TABLE": table, "BUILDKITE_API_URL": hs.URL + "/v2",
			"AWS_ENDPOINT_URL_SQS": srv.URL, "AWS_ENDPOINT_URL_DYNAMODB": srv.URL},
	})
	for _, s := range reconcilerSpecs {
		t.Run(s.file, func(t *testing.T) {
			code, out := invoke(t, invokeBin, bin, "reconciler", s.file, env)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stdout %s", code, out)
			}
			var res reconciler.Result
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("stdout is not the reconciler's result: %v\n%s", err, out)
			}
			var bodies [][]byte
			var groups []string
			for _, m := range moto.Drain(t, client, queueURL) {
				bodies = append(bodies, []byte(aws.ToString(m.Body)))
				groups = append(groups, m.Attributes["MessageGroupId"])
			}
			reconcilerWants[s.file](t, res, envelopes(t, bodies), groups)
		})
	}
}
