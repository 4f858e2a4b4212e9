package dispatcher

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// sentAgo stamps r as SQS would have when it took the message age ago.
func sentAgo(r events.SQSMessage, now time.Time, age time.Duration) events.SQSMessage {
	r.Attributes["SentTimestamp"] = strconv.FormatInt(now.Add(-age).UnixMilli(), 10)
	return r
}

// An event keeps being retried while younger than RETRY_FOR and goes to the
// DLQ with retry_window_exceeded, with one ERROR line, at its first failure
// after that. A message held back behind a failed one is never
// dead-lettered, however old.
func TestRetryWindow(t *testing.T) {
	clk := testkit.NewClock(time.Date(2024, 8, 6, 12, 0, 0, 0, time.UTC))
	tests := []struct {
		name       string
		ages       []time.Duration // of a1, a2 (one group)
		fail       []bool          // SQIBS answers 503 to this build
		wantDLQ    []dlqCall
		wantFailed []string
		wantCalls  []int64 // build numbers SQIBS saw
	}{
		{"young: retried", []time.Duration{time.Hour}, []bool{true}, nil, []string{"a1"}, []int64{1}},
		{"just inside the window: retried", []time.Duration{24*time.Hour - time.Second}, []bool{true}, nil, []string{"a1"}, []int64{1}},
		{"older than RETRY_FOR: dead-lettered", []time.Duration{24 * time.Hour}, []bool{true},
			[]dlqCall{{"a1", ReasonRetryWindowExceeded}}, nil, []int64{1}},
		{"old but delivered: nothing to dead-letter", []time.Duration{30 * time.Hour}, []bool{false}, nil, nil, []int64{1}},
		{"old head dead-lettered, the next one then tried and delivered",
			[]time.Duration{25 * time.Hour, 24*time.Hour + time.Minute}, []bool{true, false},
			[]dlqCall{{"a1", ReasonRetryWindowExceeded}}, nil, []int64{1, 2}},
		{"held back behind a young failure: never dead-lettered, however old",
			[]time.Duration{time.Minute, 48 * time.Hour}, []bool{true, false}, nil, []string{"a1", "a2"}, []int64{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, func(_ int, ev incident.Event, _ *http.Request) int {
				if tc.fail[ev.BuildNumber-1] {
					return http.StatusServiceUnavailable
				}
				return http.StatusCreated
			}, 0)
			r.h.now = clk.Now
			var batch []events.SQSMessage
			for i, age := range tc.ages {
				id := "a" + strconv.Itoa(i+1)
				batch = append(batch, sentAgo(record(t, id, "build_finished_failed.json", onBranch("main", int64(i+1), "failed")), clk.Now(), age))
			}
			resp, err := r.h.Handle(context.Background(), events.SQSEvent{Records: batch})
			if err != nil {
				t.Fatal(err)
			}
			if got := failedIDs(resp); !slices.Equal(got, tc.wantFailed) {
				t.Errorf("failed = %v, want %v", got, tc.wantFailed)
			}
			if !slices.Equal(r.dlq.calls, tc.wantDLQ) {
				t.Errorf("dead letters = %v, want %v", r.dlq.calls, tc.wantDLQ)
			}
			var calls []int64
			for _, ev := range r.srv.events() {
				calls = append(calls, ev.BuildNumber)
			}
			if !slices.Equal(calls, tc.wantCalls) {
				t.Errorf("SQIBS saw builds %v, want %v", calls, tc.wantCalls)
			}
			logs := r.logs.String()
			errorLines := strings.Count(logs, `"level":"ERROR"`)
			windowLines := strings.Count(logs, `"reason":"retry_window_exceeded"`)
			metric := strings.Count(r.emf.String(), `"`+metrics.RetryWindowExceeded+`":1`)
			if want := len(tc.wantDLQ); errorLines != want || windowLines != want || metric != want {
				t.Errorf("%d ERROR lines, %d naming the reason, %d metrics; want %d of each:\n%s", errorLines, windowLines, metric, want, logs)
			}
			if len(tc.wantDLQ) > 0 && !strings.Contains(logs, `"retry_for":"24h0m0s"`) {
				t.Errorf("the ERROR line does not say RETRY_FOR:\n%s", logs)
			}
		})
	}
}

// Without a SentTimestamp (not an SQS message) the age is unknown: the
// event is retried and left to the redrive net.
func TestRetryWindowWithoutSentTimestamp(t *testing.T) {
	r := newRig(t, func(int, incident.Event, *http.Request) int { return http.StatusBadGateway }, 0)
	resp, _ := r.h.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{record(t, "m1", "build_finished_failed.json", nil)}})
	if len(resp.BatchItemFailures) != 1 || len(r.dlq.calls) != 0 {
		t.Errorf("failures %v, dead letters %v; want retried", resp.BatchItemFailures, r.dlq.calls)
	}
}

// The figures template.yaml's comments and docs/operations.md quote.
func TestMaxRetryFor(t *testing.T) {
	for _, tc := range []struct {
		maxBackoff time.Duration
		want       time.Duration
	}{
		// 2+3+6+13+26+51 s, then 943 × 96 s (120 s less the 20% jitter).
		{2 * time.Minute, 90629 * time.Second},
		{time.Minute, 45362 * time.Second},
		{5 * time.Minute, 226248 * time.Second},
		{15 * time.Minute, 677618 * time.Second},
	} {
		if got := MaxRetryFor(tc.maxBackoff); got != tc.want {
			t.Errorf("MaxRetryFor(%s) = %s (%d s), want %s", tc.maxBackoff, got, int(got.Seconds()), tc.want)
		}
	}
	if MaxRetryFor(DefaultMaxBackoff) < DefaultRetryFor {
		t.Errorf("the defaults do not fit: MaxRetryFor(%s) = %s < %s", DefaultMaxBackoff, MaxRetryFor(DefaultMaxBackoff), DefaultRetryFor)
	}
	for _, r := range []time.Duration{time.Hour, 24 * time.Hour, 72 * time.Hour} {
		m := MinMaxBackoff(r)
		if MaxRetryFor(m) < r || MaxRetryFor(m-time.Second) >= r {
			t.Errorf("MinMaxBackoff(%s) = %s is not the shortest that fits", r, m)
		}
	}
}

// The simulated worst case of MaxRetryFor's argument: a message held back
// behind failing heads at every receive, each receive followed by the
// shortest backoff its count allows, stays under the redrive net until it
// is older than RETRY_FOR.
func TestRedriveNetCannotFireFirst(t *testing.T) {
	for _, mb := range []time.Duration{time.Minute, DefaultMaxBackoff, 15 * time.Minute} {
		retryFor := MaxRetryFor(mb)
		var age time.Duration
		n := 1
		for ; age < retryFor; n++ {
			age += backoffFor(n, time.Second, mb, 0)
		}
		// Receive n is the first at which the age reaches RETRY_FOR, and
		// so the one that dead-letters it.
		if n > queue.MaxReceiveCount-ReceiveMargin {
			t.Errorf("MAX_BACKOFF %s: dead-lettered by age at receive %d, past the net's %d less the margin", mb, n, queue.MaxReceiveCount)
		}
	}
}

func TestRetrySettings(t *testing.T) {
	for _, tc := range []struct {
		env                  map[string]string
		retryFor, maxBackoff time.Duration
		errName              string // the variable the error must name; "" = valid
	}{
		{nil, 24 * time.Hour, 2 * time.Minute, ""},
		{map[string]string{"RETRY_FOR": "1h", "MAX_BACKOFF": "30s"}, time.Hour, 30 * time.Second, ""},
		{map[string]string{"RETRY_FOR": "72h", "MAX_BACKOFF": "10m"}, 72 * time.Hour, 10 * time.Minute, ""},
		{map[string]string{"RETRY_FOR": "forever"}, 0, 0, "RETRY_FOR"},
		{map[string]string{"RETRY_FOR": "-1h"}, 0, 0, "RETRY_FOR"},
		{map[string]string{"MAX_BACKOFF": "0s"}, 0, 0, "MAX_BACKOFF"},
		{map[string]string{"MAX_BACKOFF": "500ms"}, 0, 0, "MAX_BACKOFF"},
		{map[string]string{"MAX_BACKOFF": "13h"}, 0, 0, "MAX_BACKOFF"},
		{map[string]string{"RETRY_FOR": "15d"}, 0, 0, "RETRY_FOR"}, // not a Go duration
		{map[string]string{"RETRY_FOR": "400h", "MAX_BACKOFF": "12h"}, 0, 0, "RETRY_FOR"},
		// The redrive net would fire first: the error names what was set.
		{map[string]string{"RETRY_FOR": "48h"}, 0, 0, "RETRY_FOR"},
		{map[string]string{"MAX_BACKOFF": "1m"}, 0, 0, "MAX_BACKOFF"},
		{map[string]string{"RETRY_FOR": "24h", "MAX_BACKOFF": "1m"}, 0, 0, "RETRY_FOR"},
	} {
		env := map[string]string{"SQIBS_URL": "https://x/v1/process"}
		for k, v := range tc.env {
			env[k] = v
		}
		r := config.NewReader(config.Map(env))
		s := LoadSettings(r)
		err := r.Err()
		switch {
		case tc.errName == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.errName == "" && (s.Handler.RetryFor != tc.retryFor || s.Handler.MaxBackoff != tc.maxBackoff):
			t.Errorf("%v: RetryFor %s, MaxBackoff %s; want %s, %s", tc.env, s.Handler.RetryFor, s.Handler.MaxBackoff, tc.retryFor, tc.maxBackoff)
		case tc.errName != "" && (err == nil || !strings.HasPrefix(err.Error(), "config: "+tc.errName+"=")):
			t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.errName)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("%v: error is more than one line: %q", tc.env, err)
		}
	}
}
