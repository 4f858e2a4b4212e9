package enrich

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// fakeAPI answers from a map keyed "pipeline#number", or with err; it
// records the calls and the deadline each got.
type fakeAPI struct {
	builds    map[string]*buildkiteapi.Build
	err       error
	block     bool // wait for the context to end, then return its error
	calls     []string
	deadlines []time.Duration
}

func (f *fakeAPI) get(ctx context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error) {
	f.calls = append(f.calls, fmt.Sprintf("%s/%s#%d", org, pipeline, number))
	if d, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, time.Until(d))
	}
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	b, ok := f.builds[fmt.Sprintf("%s#%d", pipeline, number)]
	if !ok {
		return nil, buildkiteapi.ErrNotFound
	}
	return b, nil
}

func (f *fakeAPI) BuildWithJobs(ctx context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error) {
	return f.get(ctx, org, pipeline, number)
}

func (f *fakeAPI) Build(ctx context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error) {
	return f.get(ctx, org, pipeline, number)
}

func ptr[T any](v T) *T { return &v }

func job(name, state string, mod ...func(*buildkite.Job)) buildkite.Job {
	j := buildkite.Job{Type: "script", Name: name, State: state, WebURL: "https://buildkite.com/acme/api/builds/7#" + name}
	if state == "failed" {
		j.ExitStatus = ptr(1)
	}
	for _, m := range mod {
		m(&j)
	}
	return j
}

func shard(i, n int) func(*buildkite.Job) {
	return func(j *buildkite.Job) { j.ParallelGroupIndex, j.ParallelGroupTotal = ptr(i), ptr(n) }
}

func withJobs(jobs ...buildkite.Job) *fakeAPI {
	return &fakeAPI{builds: map[string]*buildkiteapi.Build{"api#7": {Build: buildkite.Build{Number: 7, State: "failed"}, Jobs: jobs}}}
}

func TestFailedJobs(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name      string
		jobs      []buildkite.Job
		wantNames []string
		wantTotal int
		suffix    string
	}{
		{"DESIGN §9's example: a shard numbered from 1, then lint",
			[]buildkite.Job{job("rspec", "passed", shard(1, 10)), job("rspec", "failed", shard(2, 10)), job("lint", "failed")},
			[]string{"rspec (3/10)", "lint"}, 2, "— failed: rspec (3/10), lint"},
		{"at most five, the rest counted",
			[]buildkite.Job{job("a", "failed"), job("b", "failed"), job("c", "failed"), job("d", "failed"), job("e", "failed"), job("f", "failed"), job("g", "timed_out")},
			[]string{"a", "b", "c", "d", "e"}, 7, "— failed: a, b, c, d, e, +2 more"},
		{"soft-failed, retried, broken, canceled, waiter and block steps are not failures",
			[]buildkite.Job{
				job("flaky", "failed", func(j *buildkite.Job) { j.SoftFailed = true }),
				job("retried", "failed", func(j *buildkite.Job) { j.Retried = true }),
				job("docs", "broken"), job("stop", "canceled"),
				{Type: "waiter", State: "failed"}, {Type: "manual", Name: "deploy?", State: "failed"},
				job("ok", "passed"),
			}, nil, 0, ""},
		{"timed out, expired and a failed trigger step are failures",
			[]buildkite.Job{job("slow", "timed_out"), job("queued", "expired"), job("deploy", "failed", func(j *buildkite.Job) { j.Type = "trigger" })},
			[]string{"slow", "queued", "deploy"}, 3, "— failed: slow, queued, deploy"},
		{"names: shortcodes dropped, e-mail replaced, label and key as fallbacks",
			[]buildkite.Job{
				job(":rspec: RSpec :docker::k8s:", "failed"),
				job("notify jane@example.com", "failed"),
				job("", "failed", func(j *buildkite.Job) { j.Label = ":eslint: Lint" }),
				job(":shipit:", "failed", func(j *buildkite.Job) { j.StepKey = "ship" }),
				job("", "failed"),
			},
			[]string{"RSpec", "notify [email]", "Lint", "ship", "job"}, 5, "— failed: RSpec, notify [email], Lint, ship, job"},
		{"a colon inside a word is not a shortcode",
			[]buildkite.Job{job("build linux:arm64:", "failed")}, []string{"build linux:arm64:"}, 1, "— failed: build linux:arm64:"},
		{"long names bounded: 200 bytes kept, 60 in the title",
			[]buildkite.Job{job(long, "failed", shard(0, 2))},
			[]string{strings.Repeat("x", 191) + "… (1/2)"}, 1, "— failed: " + strings.Repeat("x", 57) + "…"},
		{"a parallelism of 1 is not a shard", []buildkite.Job{job("once", "failed", shard(0, 1))}, []string{"once"}, 1, "— failed: once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := withJobs(tc.jobs...)
			f, err := FailedJobs(context.Background(), api, "acme", "api", 7)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, j := range f.Jobs {
				names = append(names, j.Name)
			}
			if strings.Join(names, "|") != strings.Join(tc.wantNames, "|") || f.Total != tc.wantTotal {
				t.Errorf("names %q total %d, want %q %d", names, f.Total, tc.wantNames, tc.wantTotal)
			}
			if got := f.Suffix(); got != tc.suffix {
				t.Errorf("suffix %q, want %q", got, tc.suffix)
			}
			want := "api #7 failed on main"
			if tc.suffix != "" {
				want += " " + tc.suffix
			}
			if got := f.Describe("api #7 failed on main"); got != want {
				t.Errorf("Describe %q, want %q", got, want)
			}
			for _, j := range f.Jobs {
				if len(j.Name) > maxName {
					t.Errorf("name of %d bytes", len(j.Name))
				}
			}
			if len(api.calls) != 1 || api.calls[0] != "acme/api#7" {
				t.Errorf("calls %v", api.calls)
			}
		})
	}
}

func TestFailedJobsKeepsFields(t *testing.T) {
	api := withJobs(job("lint", "failed", func(j *buildkite.Job) { j.ExitStatus = ptr(2) }))
	f, err := FailedJobs(context.Background(), api, "acme", "api", 7)
	if err != nil {
		t.Fatal(err)
	}
	want := FailedJob{Name: "lint", State: "failed", ExitStatus: ptr(2), WebURL: "https://buildkite.com/acme/api/builds/7#lint"}
	if len(f.Jobs) != 1 || f.Jobs[0].Name != want.Name || f.Jobs[0].State != want.State || *f.Jobs[0].ExitStatus != 2 || f.Jobs[0].WebURL != want.WebURL {
		t.Errorf("job %+v, want %+v", f.Jobs, want)
	}
}

func TestFailedJobsErrors(t *testing.T) {
	rl := &buildkiteapi.RateLimitError{Reset: time.Now().Add(time.Minute)}
	tests := []struct {
		name  string
		api   *fakeAPI
		want  error
		class string
	}{
		{"timeout: the budget ends the call", &fakeAPI{block: true}, context.DeadlineExceeded, "timeout"},
		{"404", &fakeAPI{err: fmt.Errorf("x: %w", buildkiteapi.ErrNotFound)}, buildkiteapi.ErrNotFound, "not_found"},
		{"401", &fakeAPI{err: buildkiteapi.ErrUnauthorized}, buildkiteapi.ErrUnauthorized, "unauthorized"},
		{"429", &fakeAPI{err: rl}, buildkiteapi.ErrRateLimited, "rate_limited"},
		{"5xx", &fakeAPI{err: buildkiteapi.ErrUnavailable}, buildkiteapi.ErrUnavailable, "unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			f, err := FailedJobs(context.Background(), tc.api, "acme", "api", 7)
			if !errors.Is(err, tc.want) || buildkiteapi.Class(err) != tc.class || f.Total != 0 || f.Jobs != nil {
				t.Fatalf("err %v (class %s), result %+v; want %v", err, buildkiteapi.Class(err), f, tc.want)
			}
			if d := time.Since(start); d > Budget+500*time.Millisecond {
				t.Errorf("took %s, budget %s", d, Budget)
			}
			if len(tc.api.deadlines) != 1 || tc.api.deadlines[0] > Budget {
				t.Errorf("deadlines %v: want one, at most %s away", tc.api.deadlines, Budget)
			}
		})
	}
}

func TestFailedJobsShorterCallerDeadline(t *testing.T) {
	api := &fakeAPI{block: true}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := FailedJobs(ctx, api, "acme", "api", 7); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("took %s: the caller's deadline must win", d)
	}
}

// TestFailedJobsThroughClient runs the real client against the documented
// failed-build body (internal/buildkiteapi/testdata).
func TestFailedJobsThroughClient(t *testing.T) {
	body, err := os.ReadFile("../buildkiteapi/testdata/get_build_failed.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/organizations/my-great-org/pipelines/my-pipeline/builds/3" || r.Header.Get("Authorization") != "Bearer tok" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	c, err := buildkiteapi.New(buildkiteapi.Config{BaseURL: srv.URL}, testkit.Token("tok"), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := FailedJobs(context.Background(), c, "my-great-org", "my-pipeline", 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Suffix(); got != "— failed: RSpec (3/4), Lint, Integration" {
		t.Errorf("suffix %q", got)
	}
	if f.Jobs[1].ExitStatus == nil || *f.Jobs[1].ExitStatus != 2 || f.Jobs[2].State != "timed_out" ||
		f.Jobs[0].WebURL != "https://buildkite.com/my-great-org/my-pipeline/builds/3#b63254c0-3271-4a98-8270-7cfbd6c2f105" {
		t.Errorf("jobs %+v", f.Jobs)
	}
}
