package reconciler

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// FromState reads what the dispatcher writes: the failure's order, and the
// branch and pipeline from their own fields (a branch may hold / and #).
func TestFromState(t *testing.T) {
	m := memstate.New()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	live := func(it state.Item) *state.Item {
		it.Open, it.UpdatedAt, it.ExpiresAt, it.OpenedAt = true, at, at.Add(state.TTL), at
		return &it
	}
	for _, it := range []*state.Item{
		live(state.Item{ID: "acme/api/release/2.x#hotfix", Pipeline: "api", Branch: "release/2.x#hotfix", Order: state.Order{Build: 41, At: at}}),
		live(state.Item{ID: "acme/api/main#rspec", Pipeline: "api", Branch: "main", Step: "rspec", Order: state.Order{Build: 7, At: at}}),
		{ID: "acme/api/closed", Pipeline: "api", Branch: "closed", UpdatedAt: at, ExpiresAt: at.Add(state.TTL)},
	} {
		if err := m.Put(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FromState(m).OpenIncidents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Incident{
		"acme/api/release/2.x#hotfix": {ID: "acme/api/release/2.x#hotfix", Org: "acme", Pipeline: "api", Slug: "api", Branch: "release/2.x#hotfix", FailedBuild: 41, FailedAt: at},
		"acme/api/main#rspec":         {ID: "acme/api/main#rspec", Org: "acme", Pipeline: "api", Slug: "api", Branch: "main", FailedBuild: 7, FailedAt: at},
	}
	if len(got) != len(want) {
		t.Fatalf("open incidents %+v, want %d", got, len(want))
	}
	for _, inc := range got {
		if w := want[inc.ID]; !reflect.DeepEqual(inc, w) {
			t.Errorf("incident %+v, want %+v", inc, w)
		}
	}
	// Run checks the build incident and skips the step incident.
	st := &stack{pub: &testkit.Publisher[queue.Message]{}, builds: &fakeBuilds{lists: map[string][]buildkiteapi.Build{"acme/api/release/2.x#hotfix": nil}}}
	s, _ := newReconciler(st, &fakeOpen{list: got}, Options{}).Run(context.Background(), "r", time.Time{})
	if s.Skipped != 1 || s.Checked != 1 {
		t.Errorf("summary %+v, want the step incident skipped and the build incident checked", s)
	}
}

// The scheduled handler fails only a run that learned nothing, and writes
// its figures as metrics every run.
func TestLambdaHandle(t *testing.T) {
	listFails := errors.New("dynamodb: scan: connection refused")
	tests := []struct {
		name    string
		open    *fakeOpen
		errs    map[string]error
		wantErr bool
	}{
		{"nothing open", &fakeOpen{}, nil, false},
		{"one checked, still failing", &fakeOpen{list: []Incident{open("main", 10, t0)}}, nil, false},
		{"the state table unreadable", &fakeOpen{err: listFails}, nil, true},
		{"every incident an error (token refused)", &fakeOpen{list: []Incident{open("main", 10, t0), open("dev", 3, t0)}},
			map[string]error{"acme/api/main": buildkiteapi.ErrUnauthorized, "acme/api/dev": buildkiteapi.ErrUnauthorized}, true},
		{"one of two an error", &fakeOpen{list: []Incident{open("main", 10, t0), open("dev", 3, t0)}},
			map[string]error{"acme/api/dev": buildkiteapi.ErrUnavailable}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &stack{pub: &testkit.Publisher[queue.Message]{}, builds: &fakeBuilds{errs: tc.errs, lists: map[string][]buildkiteapi.Build{
				"acme/api/main": {apiBuild(11, "failed", "main", t0.Add(time.Minute))},
				"acme/api/dev":  {apiBuild(4, "failed", "dev", t0.Add(time.Minute))},
			}}}
			emf := &testkit.Buffer{}
			l := Lambda{R: newReconciler(st, tc.open, Options{}), Metrics: metrics.New(emf, "reconciler-test")}
			ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-7"})
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			res, err := l.Handle(ctx, events.EventBridgeEvent{DetailType: "Scheduled Event", Source: "aws.events"})
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, ErrRunFailed)) {
				t.Fatalf("err %v, want an error: %v", err, tc.wantErr)
			}
			if res.RunID != "req-7" {
				t.Errorf("run id %q, want the Lambda request id", res.RunID)
			}
			for _, name := range []string{metrics.ReconcileResolved, metrics.ReconcileErrors, metrics.ReconcileRateLimited} {
				if !strings.Contains(emf.String(), `"`+name+`":`) {
					t.Errorf("metric %s not written:\n%s", name, emf.String())
				}
			}
		})
	}
}
