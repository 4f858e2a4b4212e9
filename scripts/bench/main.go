// Command bench measures the figures of DESIGN §8 and prints them: a table
// with each figure's goal, then one line per figure, exactly
// `bench: <name>=<number>` (NaN when it could not be measured).
//
//	go test -run '^$' -bench 'BenchmarkReceiver|BenchmarkMap' -benchmem -count 5 \
//	    ./internal/receiver ./internal/incident > bin/bench-go.txt
//	go run ./scripts/bench -gobench bin/bench-go.txt
//
// `make bench` does both. What it measures, besides the Go benchmarks whose
// output it reads:
//   - the size of each linux/arm64 bootstrap, built as `make build` builds it;
//   - each bootstrap's start (exec → first /next request of the Runtime API)
//     against a hello-world aws-lambda-go bootstrap built the same way;
//   - end to end on this machine (internal/local/devstack: receiver, in-process
//     FIFO queue, dispatcher, SQIBS simulator): webhooks/s and the latency
//     from sending a webhook to SQIBS receiving its incident event;
//   - DynamoDB calls per event end to end with the incident state table
//     on moto_server, counted by a proxy in front of it;
//   - the peak RSS of each real bootstrap over many invocations (the receiver
//     publishing to SQS FIFO on moto_server, the dispatcher posting to the
//     SQIBS simulator);
//   - the drain after an SQIBS outage (internal/devstack's outage drill, on a
//     compressed clock, converted back to real-world seconds).
//
// Goals are reported as met or missed; the exit status is non-zero only when
// something could not be measured (2 for bad usage).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, measureAll)
	stop()
	os.Exit(code)
}

// options are the command's flags.
type options struct {
	goBench     string        // go test -bench output to read
	only        []string      // sections to run; empty = all
	starts      int           // start-up samples per bootstrap
	webhooks    int           // end-to-end webhooks
	senders     int           // concurrent webhook senders
	pollers     int           // dispatcher invocations in parallel (poller concurrency)
	e2eTimeout  time.Duration // bound on the end-to-end run
	invocations int           // invocations per bootstrap for the RSS figures
}

// Sections of the measurement, for -only.
const (
	secGo    = "go"
	secSize  = "size"
	secStart = "start"
	secE2E   = "e2e"
	secState = "state"
	secRSS   = "rss"
	secRecov = "recovery"
)

var sections = []string{secGo, secSize, secStart, secE2E, secRSS, secRecov, secState}

func (o options) runs(section string) bool {
	return len(o.only) == 0 || slices.Contains(o.only, section)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var only string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.goBench, "gobench", "", "output of `go test -bench ... -benchmem` to take the Go figures from (required for section go)")
	fs.StringVar(&only, "only", "", "comma list of sections to measure ("+strings.Join(sections, ",")+"); default all")
	fs.IntVar(&o.starts, "starts", 100, "start-up samples per bootstrap")
	fs.IntVar(&o.webhooks, "webhooks", 5000, "webhooks sent end to end")
	fs.IntVar(&o.senders, "senders", 16, "concurrent webhook senders (keep-alive connections)")
	fs.IntVar(&o.pollers, "pollers", 5, "end to end: dispatcher invocations running at once (the template's DispatcherMaxConcurrency default)")
	fs.DurationVar(&o.e2eTimeout, "e2e-timeout", 90*time.Second, "bound on the end-to-end run")
	fs.IntVar(&o.invocations, "invocations", 2000, "invocations of each bootstrap for its peak RSS")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if only != "" {
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(sections, s) {
				return o, fmt.Errorf("-only: unknown section %q (want %s)", s, strings.Join(sections, ","))
			}
			o.only = append(o.only, s)
		}
	}
	if o.runs(secGo) && o.goBench == "" {
		return o, errors.New("-gobench is required (or leave section go out of -only)")
	}
	if o.starts < 1 || o.webhooks < 1 || o.senders < 1 || o.pollers < 1 || o.invocations < 1 || o.e2eTimeout <= 0 {
		return o, errors.New("-starts, -webhooks, -senders, -pollers, -invocations and -e2e-timeout must be positive")
	}
	return o, nil
}

// measureFunc measures every figure it can. Figures it could not measure
// stay out of Results.Values; err says why (nil when a figure was skipped on
// purpose, e.g. moto_server absent, with a note instead).
type measureFunc func(ctx context.Context, o options, progress io.Writer) (Results, error)

// run is main without the exit, for tests: it measures, then prints the
// report on stdout, whose last lines are the figures.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, measure measureFunc) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	res, err := measure(ctx, o, stderr)
	if werr := writeReport(stdout, res); werr != nil {
		fmt.Fprintf(stderr, "bench: write report: %v\n", werr)
		return 1
	}
	if err != nil {
		// After the report, on stderr: stdout still ends with the figures.
		fmt.Fprintf(stderr, "bench failed to measure:\n%v\n", err)
		return 1
	}
	return 0
}

// Results are the measured figures by name, plus notes for the reader.
type Results struct {
	Values map[string]float64
	Notes  []string
}

func (r *Results) set(name string, v float64) {
	if r.Values == nil {
		r.Values = map[string]float64{}
	}
	r.Values[name] = v
}

func (r *Results) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// goal is a bound a figure should keep; the zero goal is none.
type goal struct {
	atLeast bool // else at most
	limit   float64
	text    string
}

func atMost(limit float64, text string) goal  { return goal{limit: limit, text: text} }
func atLeast(limit float64, text string) goal { return goal{atLeast: true, limit: limit, text: text} }

// met says whether v keeps the goal; ok is false when there is no goal or no value.
func (g goal) met(v float64) (met, ok bool) {
	if g.text == "" || math.IsNaN(v) {
		return false, false
	}
	if g.atLeast {
		return v >= g.limit, true
	}
	return v <= g.limit, true
}

// spec describes one figure of DESIGN §8, in the order they are printed.
type spec struct {
	name     string
	unit     string
	decimals int // digits kept after the point
	goal     goal
}

// "MB" in the goals is read the stricter way, 10^6 bytes, so a figure that
// meets its goal meets it under either reading of MB.
const (
	mb  = 1_000_000
	mib = 1 << 20
)

var specs = []spec{
	{"receiver_ns_op", "ns/op", 1, atMost(30_000, "≤ 30 µs")},
	{"receiver_allocs_op", "allocs/op", 1, atMost(60, "≤ 60")},
	{"dispatcher_map_ns_op", "ns/op", 1, atMost(10_000, "≤ 10 µs")},
	{"receiver_bootstrap_bytes", "bytes", 0, atMost(8*mb, "≤ 8 MB")},
	{"dispatcher_bootstrap_bytes", "bytes", 0, atMost(8*mb, "≤ 8 MB")},
	{"start_ratio_vs_hello", "×", 3, atMost(1.2, "≤ 1.2")},
	{"e2e_webhooks_per_s", "webhooks/s", 1, atLeast(500, "≥ 500")},
	{"e2e_p50_ms", "ms", 2, goal{}},
	{"e2e_p99_ms", "ms", 2, atMost(250, "≤ 250 ms")},
	{"receiver_rss_mb", "MiB", 1, atMost(30.0*mb/mib, "≤ 30 MB")},
	{"dispatcher_rss_mb", "MiB", 1, atMost(30.0*mb/mib, "≤ 30 MB")},
	// Every waiting incident's head is retried within MAX_BACKOFF (2 min).
	{"recovery_drain_s", "s", 0, atMost(180, "≤ 3 min")},
	// No goal: one read and one conditional write per event is the floor.
	{"state_calls_per_event", "calls", 2, goal{}},
	// The floor the SDK sets: ours over a hello-world that only creates
	// the same SDK clients.
	{"start_ratio_vs_hello_sdk", "×", 3, atMost(1.2, "≤ 1.2")},
}

// round keeps d decimals; NaN stays NaN.
func round(v float64, d int) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	p := math.Pow10(d)
	return math.Round(v*p) / p
}

// formatNumber is a figure as printed: a plain number, no exponent, no
// trailing zeros, or NaN.
func formatNumber(v float64, decimals int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "NaN"
	}
	return strconv.FormatFloat(round(v, decimals), 'f', -1, 64)
}

// writeReport prints the notes, a table of every figure against its goal,
// and last the machine-readable lines, one per figure in specs order.
func writeReport(w io.Writer, r Results) error {
	var b strings.Builder
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-28s %16s  %-10s  %-12s %s\n", "figure", "value", "unit", "goal", "result")
	value := func(s spec) float64 {
		v, ok := r.Values[s.name]
		if !ok {
			return math.NaN()
		}
		return round(v, s.decimals)
	}
	for _, s := range specs {
		v := value(s)
		result := "-"
		switch met, ok := s.goal.met(v); {
		case math.IsNaN(v):
			result = "not measured"
		case ok && met:
			result = "met"
		case ok:
			result = "MISSED"
		}
		g := s.goal.text
		if g == "" {
			g = "-"
		}
		fmt.Fprintf(&b, "%-28s %16s  %-10s  %-12s %s\n", s.name, formatNumber(v, s.decimals), s.unit, g, result)
	}
	b.WriteString("\n")
	for _, s := range specs {
		fmt.Fprintf(&b, "bench: %s=%s\n", s.name, formatNumber(value(s), s.decimals))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// median of xs (the mean of the middle two for an even count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of xs: the
// smallest value with at least p% of the values at or below it; NaN for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 || p <= 0 || p > 100 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}
