package enrich

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

func triggeredFrom(pipeline string, number int64) *buildkite.TriggeredFrom {
	return &buildkite.TriggeredFrom{BuildPipelineSlug: pipeline, BuildNumber: number, BuildID: "uuid"}
}

func build(branch string, pr string, tf *buildkite.TriggeredFrom) *buildkiteapi.Build {
	b := &buildkiteapi.Build{Build: buildkite.Build{Branch: branch, TriggeredFrom: tf}}
	if pr != "-" {
		b.PullRequest = &buildkite.PullRequest{ID: buildkite.FlexString(pr)}
	}
	return b
}

func TestParent(t *testing.T) {
	withPipeline := build("main", "-", nil)
	withPipeline.Pipeline = &buildkite.Pipeline{Slug: "app", DefaultBranch: "trunk"}
	tests := []struct {
		name   string
		child  *buildkite.Build
		builds map[string]*buildkiteapi.Build
		err    error
		want   Origin
		ok     bool
		calls  []string
		wantE  error
	}{
		{"not triggered: no call", &buildkite.Build{Branch: "main"}, nil, nil, Origin{}, false, nil, nil},
		{"triggered_from without a pipeline: as not triggered", &buildkite.Build{TriggeredFrom: &buildkite.TriggeredFrom{BuildID: "x"}}, nil, nil, Origin{}, false, nil, nil},
		{"a pull-request parent",
			&buildkite.Build{Branch: "main", TriggeredFrom: triggeredFrom("app", 41)},
			map[string]*buildkiteapi.Build{"app#41": build("feature/login", "42", nil)}, nil,
			Origin{Pipeline: "app", Number: 41, Branch: "feature/login", PullRequest: true, Hops: 1}, true, []string{"acme/app#41"}, nil},
		{"pull_request {} is a branch build; the default branch comes from the pipeline",
			&buildkite.Build{TriggeredFrom: triggeredFrom("app", 41)},
			map[string]*buildkiteapi.Build{"app#41": withPipeline}, nil,
			Origin{Pipeline: "app", Number: 41, Branch: "main", DefaultBranch: "trunk", Hops: 1}, true, []string{"acme/app#41"}, nil},
		{"a chain is followed to the build no trigger started",
			&buildkite.Build{TriggeredFrom: triggeredFrom("smoke", 9)},
			map[string]*buildkiteapi.Build{"smoke#9": build("main", "-", triggeredFrom("deploy", 5)), "deploy#5": build("main", "", triggeredFrom("app", 41)), "app#41": build("fix/x", "7", nil)}, nil,
			Origin{Pipeline: "app", Number: 41, Branch: "fix/x", PullRequest: true, Hops: 3}, true, []string{"acme/smoke#9", "acme/deploy#5", "acme/app#41"}, nil},
		{"a chain longer than MaxHops",
			&buildkite.Build{TriggeredFrom: triggeredFrom("a", 1)},
			map[string]*buildkiteapi.Build{"a#1": build("main", "-", triggeredFrom("b", 1)), "b#1": build("main", "-", triggeredFrom("c", 1)), "c#1": build("main", "-", triggeredFrom("d", 1))}, nil,
			Origin{}, false, []string{"acme/a#1", "acme/b#1", "acme/c#1"}, ErrTriggerLoop},
		{"a loop",
			&buildkite.Build{TriggeredFrom: triggeredFrom("a", 1)},
			map[string]*buildkiteapi.Build{"a#1": build("main", "-", triggeredFrom("b", 1)), "b#1": build("main", "-", triggeredFrom("a", 1))}, nil,
			Origin{}, false, []string{"acme/a#1", "acme/b#1"}, ErrTriggerLoop},
		{"the parent is gone (404)", &buildkite.Build{TriggeredFrom: triggeredFrom("app", 41)}, map[string]*buildkiteapi.Build{}, nil,
			Origin{}, false, []string{"acme/app#41"}, buildkiteapi.ErrNotFound},
		{"rate limited", &buildkite.Build{TriggeredFrom: triggeredFrom("app", 41)}, nil, &buildkiteapi.RateLimitError{},
			Origin{}, false, []string{"acme/app#41"}, buildkiteapi.ErrRateLimited},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := &fakeAPI{builds: tc.builds, err: tc.err}
			o, ok, err := Parent(context.Background(), api, "acme", tc.child)
			if !errors.Is(err, tc.wantE) || (tc.wantE == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.wantE)
			}
			if o != tc.want || ok != tc.ok {
				t.Errorf("origin %+v ok %v, want %+v %v", o, ok, tc.want, tc.ok)
			}
			if strings.Join(api.calls, " ") != strings.Join(tc.calls, " ") {
				t.Errorf("calls %v, want %v", api.calls, tc.calls)
			}
			for _, d := range api.deadlines {
				if d > Budget {
					t.Errorf("deadline %s away, budget %s", d, Budget)
				}
			}
		})
	}
}

// TestParentThroughClient judges the documented triggered build by its
// documented pull-request parent, through the real client.
func TestParentThroughClient(t *testing.T) {
	child, err := os.ReadFile("../buildkiteapi/testdata/get_build_triggered.json")
	if err != nil {
		t.Fatal(err)
	}
	parent, err := os.ReadFile("../buildkiteapi/testdata/get_build_pull_request.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/organizations/my-great-org/pipelines/deploy-pipeline/builds/15":
			w.Write(child)
		case "/organizations/my-great-org/pipelines/great-pipeline/builds/2":
			w.Write(parent)
		default:
			w.WriteHeader(404)
			w.Write([]byte(`{"message":"No build found"}`))
		}
	}))
	defer srv.Close()
	c, err := buildkiteapi.New(buildkiteapi.Config{BaseURL: srv.URL}, testkit.Token("tok"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Build(context.Background(), "my-great-org", "deploy-pipeline", 15)
	if err != nil {
		t.Fatal(err)
	}
	o, ok, err := Parent(context.Background(), c, "my-great-org", &b.Build)
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	want := Origin{Pipeline: "great-pipeline", Number: 2, Branch: "feature/login", DefaultBranch: "main", PullRequest: true, Hops: 1}
	if o != want {
		t.Errorf("origin %+v, want %+v", o, want)
	}
}
