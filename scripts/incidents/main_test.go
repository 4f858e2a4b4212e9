package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, func(string) string { return "" }, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// seed writes the state the dispatcher would have after these events: a
// build incident open after two failures, a step incident with one of two
// shards failing, and a resolved incident.
func seed(t *testing.T, table string) time.Time {
	t.Helper()
	m := moto.Start(t)
	c := m.DynamoDB(t)
	if err := dynamo.CreateTable(t.Context(), c, table); err != nil {
		t.Fatal(err)
	}
	s := dynamo.New(c, table)
	now := time.Now().UTC().Truncate(time.Second)
	at := func(min int) time.Time { return now.Add(time.Duration(min-60) * time.Minute) }
	build := func(id string, n int64, failed bool, m int) state.Event {
		st := "PASSED"
		if failed {
			st = "FAILED"
		}
		return state.Event{ID: id, Failed: failed, Status: st, Order: state.Order{Build: n, At: at(m)},
			BuildID: id + string(rune('a'+n)), URL: "https://buildkite.com/" + id + "/builds", Pipeline: "p"}
	}
	shard := func(n int64, job string, failed bool, m int) state.Event {
		ev := build("acme/web/main#rspec", n, failed, m)
		ev.Step, ev.Job = true, job
		return ev
	}
	for _, ev := range []state.Event{
		build("acme/api/main", 1, true, 10), build("acme/api/main", 2, true, 20),
		shard(7, "rspec/0", true, 5), shard(7, "rspec/1", true, 6), shard(8, "rspec/1", false, 30),
		build("acme/ok/main", 3, true, 1), build("acme/ok/main", 4, false, 2),
	} {
		prev, err := s.Get(context.Background(), ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		v := state.Decide(prev, ev, state.Settings{AlertAfter: 1}, now)
		if err := s.Put(context.Background(), v.Next); err != nil {
			t.Fatal(err)
		}
	}
	return now
}

func TestListsOpenIncidents(t *testing.T) {
	now := seed(t, "bridge-incidents")
	code, out, errOut := runCmd("-table", "bridge-incidents")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID ") || lines[3] != "2 open incident(s) in bridge-incidents" {
		t.Fatalf("output:\n%s", out)
	}
	// Oldest first: the step incident opened at minute 5, the build one at 10.
	want := [][]string{
		{"acme/web/main#rspec", now.Add(-55 * time.Minute).Format(time.RFC3339), "0", "rspec/0", "https://buildkite.com/acme/web/main#rspec/builds"},
		{"acme/api/main", now.Add(-50 * time.Minute).Format(time.RFC3339), "2", "-", "https://buildkite.com/acme/api/main/builds"},
	}
	for i, w := range want {
		if got := strings.Fields(lines[i+1]); !reflect.DeepEqual(got, w) {
			t.Errorf("line %d = %q; want %q", i+1, got, w)
		}
	}

	code, out, errOut = runCmd("-table", "bridge-incidents", "-json")
	if code != 0 {
		t.Fatalf("-json exit %d: %s", code, errOut)
	}
	var list []incident
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("-json output: %v\n%s", err, out)
	}
	if len(list) != 2 || list[1].ID != "acme/api/main" || list[1].ConsecutiveFailures != 2 || !list[1].Since.Equal(now.Add(-50*time.Minute)) ||
		!reflect.DeepEqual(list[0].FailingJobs, []string{"rspec/0"}) || list[1].LastStatus != "FAILED" {
		t.Errorf("-json: %+v", list)
	}
	if !strings.Contains(out, `"failing_jobs": []`) {
		t.Errorf("a build incident's failing_jobs should be [], not null:\n%s", out)
	}
}

func TestUsageAndErrors(t *testing.T) {
	if code, _, errOut := runCmd(); code != 2 || !strings.Contains(errOut, "usage: incidents") {
		t.Errorf("no table: exit %d, %q", code, errOut)
	}
	moto.Start(t)
	if code, _, errOut := runCmd("-table", "no-such-table"); code != 1 || !strings.Contains(errOut, "no-such-table") {
		t.Errorf("missing table: exit %d, %q", code, errOut)
	}
	if code, out, errOut := runCmd("-table", "made-here", "-create"); code != 0 || !strings.Contains(out, "0 open incident(s) in made-here") {
		t.Errorf("-create: exit %d, %q %q", code, out, errOut)
	}
	var stdout, stderr bytes.Buffer
	if code := run(nil, func(k string) string { return map[string]string{"STATE_TABLE": "from-env"}[k] }, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "from-env") {
		t.Errorf("STATE_TABLE default: exit %d, %q", code, stderr.String())
	}
}
