package enrich

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/local/buildkitesim"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// TestFailedJobsAgainstSimulator: the simulator learns a failed build and
// its failed job from their webhooks; enrichment names the job, and every
// API failure comes back within the budget as an error.
func TestFailedJobsAgainstSimulator(t *testing.T) {
	tests := []struct {
		name   string
		fault  *buildkitesim.Fault
		number int64
		want   error
		suffix string
	}{
		{"the failed job named", nil, 1234, nil, "— failed: test"},
		{"API down", &buildkitesim.Fault{Status: 500}, 1234, buildkiteapi.ErrUnavailable, ""},
		{"API slow: the 1 s budget", &buildkitesim.Fault{Delay: 3 * time.Second}, 1234, context.DeadlineExceeded, ""},
		{"rate limited", &buildkitesim.Fault{Reset: 20 * time.Second}, 1234, buildkiteapi.ErrRateLimited, ""},
		{"unknown build", nil, 99, buildkiteapi.ErrNotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := buildkitesim.New("tok")
			srv := httptest.NewServer(sim)
			defer func() { sim.Close(); srv.Close() }()
			sim.Record(testkit.Webhook(t, "build_finished_failed.json"))
			sim.Record(testkit.Webhook(t, "job_finished_failed.json"))
			if tc.fault != nil {
				sim.SetFault(func(int, buildkitesim.Request) *buildkitesim.Fault { return tc.fault })
			}
			c, err := buildkiteapi.New(buildkiteapi.Config{BaseURL: srv.URL + "/v2"}, testkit.Token("tok"), nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			f, err := FailedJobs(context.Background(), c, "acme", "deploy-api", tc.number)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > Budget+500*time.Millisecond {
				t.Errorf("took %s", d)
			}
			if f.Suffix() != tc.suffix {
				t.Errorf("suffix %q, want %q", f.Suffix(), tc.suffix)
			}
		})
	}
}
