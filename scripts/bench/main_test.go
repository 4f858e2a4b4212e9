package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// -smoke runs every measurement at a tiny size (builds, bootstraps,
// moto when present): slow, so opt-in.
var smoke = flag.Bool("smoke", false, "run the whole measurement at a tiny size")

// goBenchOutput is real `go test -bench -benchmem -count` output, trimmed.
const goBenchOutput = `goos: linux
goarch: amd64
pkg: github.com/callgoose/buildkite-sqibs/internal/receiver
cpu: AMD EPYC 7B13
BenchmarkReceiver-2   	   61230	     19523 ns/op	 267.36 MB/s	   12101 B/op	      48 allocs/op
BenchmarkReceiver-2   	   60914	     19876 ns/op	 262.62 MB/s	   12100 B/op	      48 allocs/op
BenchmarkReceiver-2   	   58877	     21002 ns/op	 248.54 MB/s	   12102 B/op	      49 allocs/op
BenchmarkReceiver-2   	   62004	     19101 ns/op	 273.28 MB/s	   12101 B/op	      48 allocs/op
BenchmarkReceiver-2   	   59000	     20500 ns/op	 254.63 MB/s	   12103 B/op	      50 allocs/op
PASS
ok  	github.com/callgoose/buildkite-sqibs/internal/receiver	8.121s
goos: linux
goarch: amd64
pkg: github.com/callgoose/buildkite-sqibs/internal/incident
BenchmarkMap-2        	  401923	      2987 ns/op	    1456 B/op	      17 allocs/op
BenchmarkMap-2        	  399811	      3011.5 ns/op	    1456 B/op	      17 allocs/op
BenchmarkMap-2        	  410223	      2950 ns/op	    1456 B/op	      17 allocs/op
BenchmarkMap          	  410223	      2990 ns/op	    1456 B/op	      17 allocs/op
BenchmarkMap/sub-2    	  100	      7 ns/op
BenchmarkMap-2 logged something without numbers
PASS
ok  	github.com/callgoose/buildkite-sqibs/internal/incident	6.402s
`

func TestParseGoBench(t *testing.T) {
	runs, err := parseGoBench(strings.NewReader(goBenchOutput))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, unit string
		want       []float64
		median     float64
	}{
		{"BenchmarkReceiver", "ns/op", []float64{19523, 19876, 21002, 19101, 20500}, 19876},
		{"BenchmarkReceiver", "allocs/op", []float64{48, 48, 49, 48, 50}, 48},
		{"BenchmarkReceiver", "MB/s", []float64{267.36, 262.62, 248.54, 273.28, 254.63}, 262.62},
		{"BenchmarkMap", "ns/op", []float64{2987, 3011.5, 2950, 2990}, 2988.5}, // with and without the -P suffix
		{"BenchmarkMap/sub", "ns/op", []float64{7}, 7},
	}
	for _, tt := range tests {
		if got := runs[tt.name][tt.unit]; !slices.Equal(got, tt.want) {
			t.Errorf("%s %s = %v, want %v", tt.name, tt.unit, got, tt.want)
		}
		if got, err := runs.medianOf(tt.name, tt.unit); err != nil || got != tt.median {
			t.Errorf("median %s %s = %v, %v, want %v", tt.name, tt.unit, got, err, tt.median)
		}
	}
	if len(runs) != 3 {
		t.Errorf("parsed benchmarks %v, want 3", slices.Collect(maps.Keys(runs)))
	}
	if _, err := runs.medianOf("BenchmarkNope", "ns/op"); err == nil || !strings.Contains(err.Error(), "BenchmarkNope") {
		t.Errorf("missing benchmark: err %v, want one naming it", err)
	}
}

func TestParseGoBenchBadNumber(t *testing.T) {
	_, err := parseGoBench(strings.NewReader("BenchmarkX-2 100 12x ns/op\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("err = %v, want a line-1 parse error", err)
	}
}

func TestGoFigures(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full.txt")
	onlyMap := filepath.Join(dir, "map.txt")
	if err := os.WriteFile(full, []byte(goBenchOutput), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(onlyMap, []byte("BenchmarkMap-2 100 2950 ns/op 1 allocs/op\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	var res Results
	if err := goFigures(full, &res); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"receiver_ns_op": 19876, "receiver_allocs_op": 48, "dispatcher_map_ns_op": 2988.5}
	for k, v := range want {
		if res.Values[k] != v {
			t.Errorf("%s = %v, want %v", k, res.Values[k], v)
		}
	}

	res = Results{}
	err := goFigures(onlyMap, &res)
	if err == nil || !strings.Contains(err.Error(), "receiver_ns_op") || !strings.Contains(err.Error(), "receiver_allocs_op") {
		t.Errorf("err = %v, want it to name both missing receiver figures", err)
	}
	if res.Values["dispatcher_map_ns_op"] != 2950 {
		t.Errorf("the figure that was there is lost: %v", res.Values)
	}
	if err := goFigures(filepath.Join(dir, "absent.txt"), &res); err == nil {
		t.Error("absent file: no error")
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1, 10, 1}, 10},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		if got := median(in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("median reordered its input: %v", in)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[99-i] = float64(i + 1) // 100..1, unsorted
	}
	tests := []struct {
		in   []float64
		p    float64
		want float64
	}{
		{hundred, 50, 50},
		{hundred, 99, 99},
		{hundred, 100, 100},
		{hundred, 0.5, 1},
		{[]float64{7}, 99, 7},
		{[]float64{1, 2, 3, 4}, 50, 2},
		{[]float64{1, 2, 3, 4}, 51, 3},
		{[]float64{1, 2, 3, 4}, 99, 4},
	}
	for _, tt := range tests {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tt.in), tt.p, got, tt.want)
		}
	}
	for _, p := range []float64{0, -1, 101} {
		if got := percentile(hundred, p); !math.IsNaN(got) {
			t.Errorf("percentile(p=%v) = %v, want NaN", p, got)
		}
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile(nil) is not NaN")
	}
}

func TestFormatNumber(t *testing.T) {
	tests := []struct {
		v        float64
		decimals int
		want     string
	}{
		{10092706, 0, "10092706"},
		{123456789012, 0, "123456789012"}, // never an exponent
		{2.15873, 3, "2.159"},
		{1.2, 3, "1.2"},
		{48, 1, "48"},
		{19523.25, 1, "19523.3"},
		{0.004, 2, "0"},
		{math.NaN(), 2, "NaN"},
		{math.Inf(1), 2, "NaN"},
	}
	for _, tt := range tests {
		if got := formatNumber(tt.v, tt.decimals); got != tt.want {
			t.Errorf("formatNumber(%v, %d) = %q, want %q", tt.v, tt.decimals, got, tt.want)
		}
	}
}

// wantNames is DESIGN §8's list, in its order.
var wantNames = []string{
	"receiver_ns_op", "receiver_allocs_op", "dispatcher_map_ns_op", "receiver_bootstrap_bytes",
	"dispatcher_bootstrap_bytes", "start_ratio_vs_hello", "e2e_webhooks_per_s", "e2e_p50_ms",
	"e2e_p99_ms", "receiver_rss_mb", "dispatcher_rss_mb", "recovery_drain_s", "state_calls_per_event",
	"start_ratio_vs_hello_sdk",
}

func sampleResults() Results {
	return Results{
		Values: map[string]float64{
			"receiver_ns_op": 19876, "receiver_allocs_op": 48, "dispatcher_map_ns_op": 12000.04,
			// 8,192,162 B is under 8 MiB but over 8 MB: the stricter reading judges.
			"receiver_bootstrap_bytes": 8_000_000, "dispatcher_bootstrap_bytes": 8_192_162,
			"start_ratio_vs_hello": 1.23456, "e2e_webhooks_per_s": 8623.7349, "e2e_p50_ms": 1.8749,
			"e2e_p99_ms": 250, "receiver_rss_mb": 16.66, "state_calls_per_event": 2.2049, "start_ratio_vs_hello_sdk": 1.0912,
			// dispatcher_rss_mb not measured
			"recovery_drain_s": 118.6,
		},
		Notes: []string{"a note"},
	}
}

func TestWriteReport(t *testing.T) {
	var out bytes.Buffer
	if err := writeReport(&out, sampleResults()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) < len(wantNames) {
		t.Fatalf("report too short:\n%s", out.String())
	}
	wantTail := []string{
		"bench: receiver_ns_op=19876",
		"bench: receiver_allocs_op=48",
		"bench: dispatcher_map_ns_op=12000",
		"bench: receiver_bootstrap_bytes=8000000",
		"bench: dispatcher_bootstrap_bytes=8192162",
		"bench: start_ratio_vs_hello=1.235",
		"bench: e2e_webhooks_per_s=8623.7",
		"bench: e2e_p50_ms=1.87",
		"bench: e2e_p99_ms=250",
		"bench: receiver_rss_mb=16.7",
		"bench: dispatcher_rss_mb=NaN",
		"bench: recovery_drain_s=119",
		"bench: state_calls_per_event=2.2",
		"bench: start_ratio_vs_hello_sdk=1.091",
	}
	if got := lines[len(lines)-len(wantTail):]; !slices.Equal(got, wantTail) {
		t.Errorf("last lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantTail, "\n"))
	}
	for i, name := range wantNames {
		if !strings.HasPrefix(wantTail[i], "bench: "+name+"=") {
			t.Fatalf("test table out of DESIGN §8 order at %s", name)
		}
	}
	if strings.Count(out.String(), "bench: ") != len(wantNames) {
		t.Errorf("`bench: ` appears outside the figure lines:\n%s", out.String())
	}

	// The table marks each goal; a value exactly at its bound meets it.
	row := func(name string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, name+" ") {
				return l
			}
		}
		t.Fatalf("no table row for %s", name)
		return ""
	}
	for name, want := range map[string]string{
		"receiver_ns_op": "met", "receiver_allocs_op": "met", "dispatcher_map_ns_op": "MISSED",
		"receiver_bootstrap_bytes": "met", "dispatcher_bootstrap_bytes": "MISSED",
		"start_ratio_vs_hello": "MISSED", "e2e_webhooks_per_s": "met", "e2e_p50_ms": "-",
		"e2e_p99_ms": "met", "receiver_rss_mb": "met", "dispatcher_rss_mb": "not measured",
		"recovery_drain_s": "met", "state_calls_per_event": "-", "start_ratio_vs_hello_sdk": "met",
	} {
		if r := row(name); !strings.HasSuffix(r, " "+want) {
			t.Errorf("row %q: want result %q", r, want)
		}
	}
	if !strings.Contains(out.String(), "  - a note\n") {
		t.Errorf("note missing:\n%s", out.String())
	}
}

func TestSpecsMatchDesign(t *testing.T) {
	var names []string
	for _, s := range specs {
		names = append(names, s.name)
	}
	if !slices.Equal(names, wantNames) {
		t.Errorf("specs %v, want %v", names, wantNames)
	}
}

func TestRun(t *testing.T) {
	goFile := filepath.Join(t.TempDir(), "go.txt")
	fake := func(res Results, err error) measureFunc {
		return func(context.Context, options, io.Writer) (Results, error) { return res, err }
	}
	tests := []struct {
		name     string
		args     []string
		measure  measureFunc
		code     int
		figures  bool   // stdout ends with the 11 figure lines
		inStderr string // part of stderr
	}{
		{"ok", []string{"-gobench", goFile}, fake(sampleResults(), nil), 0, true, ""},
		{"measure failed", []string{"-gobench", goFile}, fake(sampleResults(), errors.New("e2e: only 3 of 5")), 1, true, "only 3 of 5"},
		{"missing -gobench", nil, fake(sampleResults(), nil), 2, false, "-gobench is required"},
		{"-only without go", []string{"-only", "size,start"}, fake(Results{}, nil), 0, true, ""},
		{"bad section", []string{"-only", "size,warp"}, fake(Results{}, nil), 2, false, `unknown section "warp"`},
		{"bad count", []string{"-gobench", goFile, "-webhooks", "0"}, fake(Results{}, nil), 2, false, "must be positive"},
		{"stray argument", []string{"-gobench", goFile, "extra"}, fake(Results{}, nil), 2, false, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr, tt.measure); code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if tt.figures {
				tail := lines[max(len(lines)-len(wantNames), 0):]
				for i, name := range wantNames {
					if i >= len(tail) || !strings.HasPrefix(tail[i], "bench: "+name+"=") {
						t.Fatalf("stdout does not end with the figures:\n%s", stdout.String())
					}
				}
			} else if stdout.Len() > 0 {
				t.Errorf("usage error printed a report:\n%s", stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.inStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tt.inStderr)
			}
		})
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestWebhooks(t *testing.T) {
	hooks, err := loadWebhooks(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	numbers := map[int]bool{}
	states := map[string][]string{} // incident id → states in order
	for i := range n {
		body := hooks.body(i)
		if len(body) < 4<<10 || len(body) > 7<<10 {
			t.Errorf("webhook %d is %d bytes, want about 5 KB", i, len(body))
		}
		p, err := buildkite.Parse(body, "")
		if err != nil {
			t.Fatalf("webhook %d: %v", i, err)
		}
		s := specOf(i)
		if p.Event != "build.finished" || int(p.Build.Number) != s.Number || p.Build.State != s.State ||
			p.Build.Branch != s.Branch || p.PipelineSlug() != s.Pipeline || p.OrgSlug() != "acme" {
			t.Errorf("webhook %d: event %s #%d %s on %s/%s, want #%d %s on %s/%s", i, p.Event, p.Build.Number,
				p.Build.State, p.PipelineSlug(), p.Build.Branch, s.Number, s.State, s.Pipeline, s.Branch)
		}
		if numbers[s.Number] {
			t.Errorf("build number %d twice", s.Number)
		}
		numbers[s.Number] = true
		id := s.Pipeline + "/" + s.Branch
		states[id] = append(states[id], s.State)
		if got := buildNumberOf([]byte(`{"event":{"id":"x","build_number":` + itoa(s.Number) + `}}`)); got != s.Number {
			t.Errorf("buildNumberOf = %d, want %d", got, s.Number)
		}
	}
	if len(states) != groups {
		t.Errorf("%d incidents, want %d", len(states), groups)
	}
	for id, ss := range states {
		if !slices.Equal(ss, []string{"failed", "passed", "failed", "passed"}) {
			t.Errorf("%s: states %v, want alternating from failed", id, ss)
		}
	}
	if got := buildNumberOf([]byte(`not json`)); got != 0 {
		t.Errorf("buildNumberOf(garbage) = %d", got)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestSignatureVerifies(t *testing.T) {
	body := []byte(`{"event":"ping"}`)
	now := time.Now()
	auth := buildkite.Authenticator{Now: func() time.Time { return now }}
	if err := auth.Verify([]string{"tok"}, "", buildkite.Sign("tok", now, body), body); err != nil {
		t.Errorf("the project's verifier refuses our signature: %v", err)
	}
	if err := auth.Verify([]string{"other"}, "", buildkite.Sign("tok", now, body), body); err == nil {
		t.Error("a signature with the wrong token verified")
	}
}

func TestSQSEvent(t *testing.T) {
	hooks, err := loadWebhooks(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := sqsEvent(hooks, 20, recordsPerBatch)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Records) != recordsPerBatch {
		t.Fatalf("%d records", len(ev.Records))
	}
	ids := map[string]bool{}
	for k, r := range ev.Records {
		i := 20 + k
		env, err := queue.Decode([]byte(r.Body))
		if err != nil {
			t.Fatalf("record %d: %v", k, err)
		}
		s := specOf(i)
		if int(env.Payload.Build.Number) != s.Number || env.Event != "build.finished" {
			t.Errorf("record %d: #%d %s, want #%d build.finished", k, env.Payload.Build.Number, env.Event, s.Number)
		}
		if strings.Contains(r.Body, "SECRET") {
			t.Errorf("record %d carries a secret from the fixture: the envelope is not the trimmed payload", k)
		}
		if r.Attributes["MessageGroupId"] != "acme/"+s.Pipeline+"/"+s.Branch || r.Attributes["ApproximateReceiveCount"] != "1" {
			t.Errorf("record %d attributes %v", k, r.Attributes)
		}
		if ids[r.MessageId] {
			t.Errorf("message id %s twice", r.MessageId)
		}
		ids[r.MessageId] = true
	}
}

// TestEndToEndSmall runs the end-to-end measurement at a small size: the
// figures exist and are sane (no timing bound: that is the benchmark's job).
func TestEndToEndSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole local stack")
	}
	o := options{webhooks: 300, senders: 4, pollers: 2, e2eTimeout: 60 * time.Second}
	var res Results
	if err := endToEnd(context.Background(), repoRoot(t), o, &res); err != nil {
		t.Fatal(err)
	}
	rate, p50, p99 := res.Values["e2e_webhooks_per_s"], res.Values["e2e_p50_ms"], res.Values["e2e_p99_ms"]
	if !(rate > 0) || !(p50 > 0) || !(p99 >= p50) {
		t.Errorf("rate %v, p50 %v, p99 %v: want rate > 0 and 0 < p50 ≤ p99", rate, p50, p99)
	}
}

// TestMeasureAllSmoke runs everything at a tiny size; opt in with
// go test ./scripts/bench -run Smoke -args -smoke.
func TestMeasureAllSmoke(t *testing.T) {
	if !*smoke {
		t.Skip("opt in with -smoke (builds bootstraps, starts moto_server)")
	}
	o := options{starts: 2, webhooks: 100, senders: 4, pollers: 2, e2eTimeout: time.Minute, invocations: 5,
		only: []string{secSize, secStart, secE2E, secRSS, secRecov, secState}}
	res, err := measureAll(context.Background(), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs[3:] {
		needsMoto := s.name == "receiver_rss_mb" || s.name == "state_calls_per_event"
		if _, ok := res.Values[s.name]; !ok && !(needsMoto && os.Getenv("REQUIRE_MOTO") != "1") {
			t.Errorf("%s not measured; notes: %v", s.name, res.Notes)
		}
	}
}

// TestStateCallsSmall counts the DynamoDB calls of a small run: each of the
// 100 incidents gets a failed then a passed build; the first costs a read
// of the incident, a read of its alias, and the writes of both; the second
// a read and a write. (6 calls per 2 webhooks.)
func TestStateCallsSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole local stack and moto_server")
	}
	m, err := startMoto(context.Background())
	if errors.Is(err, moto.ErrAbsent) && os.Getenv("REQUIRE_MOTO") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	o := options{webhooks: 2 * groups, senders: 4, pollers: 2, e2eTimeout: 60 * time.Second}
	before, wasSet := os.LookupEnv("AWS_ENDPOINT_URL_DYNAMODB")
	var res Results
	if err := stateCalls(context.Background(), repoRoot(t), m, o, &res); err != nil {
		t.Fatal(err)
	}
	if got := res.Values["state_calls_per_event"]; got != 3 {
		t.Errorf("state_calls_per_event = %v; want 3\n%v", got, res.Notes)
	}
	if after, isSet := os.LookupEnv("AWS_ENDPOINT_URL_DYNAMODB"); after != before || isSet != wasSet {
		t.Errorf("AWS_ENDPOINT_URL_DYNAMODB is %q after the run, %q before", after, before)
	}
}
