package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
)

// OutageOptions describe an SQIBS outage drill (RunOutage): every incident
// gets a webhook each Every; SQIBS is up for one round, then answers 503 to
// everything for Outage, then recovers while the traffic goes on for After.
// Durations are real-world ones, run Scale times as fast: the dispatcher's
// backoff unit, MAX_BACKOFF, RETRY_FOR and the queue's visibility timeout
// are all scaled alike, so the run is the real one, compressed.
type OutageOptions struct {
	Fixture    []byte        // a build.finished webhook body; every event is made from it
	Incidents  int           // default 20
	Every      time.Duration // default 1 min
	Outage     time.Duration // default 10 min
	After      time.Duration // default 2 min
	Scale      float64       // default 1/60: a real-world minute takes a second
	MaxBackoff time.Duration // default the dispatcher's (MAX_BACKOFF)
	RetryFor   time.Duration // default the dispatcher's (RETRY_FOR)
	Stderr     io.Writer     // the stack's JSON logs; default discarded
}

// OutageResult is what the drill saw. Durations are real-world (unscaled).
type OutageResult struct {
	Sent    int // webhooks queued
	Backlog int // of them, queued before SQIBS recovered
	Refused int // SQIBS calls answered 503
	// Drain runs from the recovery to the delivery of the last event queued
	// before it.
	Drain       time.Duration
	Missing     []string // events never delivered ("<incident> #<build>")
	Repeats     int      // deliveries of an event SQIBS had already processed
	OutOfOrder  []string // incidents whose events SQIBS processed out of their order
	DeadLetters []sqibssim.DeadLetter
}

const outageToken = "outage-webhook-token"

// RunOutage runs the drill on a fresh in-process stack and reports what it
// saw; an error means the drill itself could not run.
func RunOutage(ctx context.Context, o OutageOptions) (OutageResult, error) {
	if o.Incidents <= 0 {
		o.Incidents = 20
	}
	if o.Every <= 0 {
		o.Every = time.Minute
	}
	if o.Outage <= 0 {
		o.Outage = 10 * time.Minute
	}
	if o.After <= 0 {
		o.After = 2 * time.Minute
	}
	if o.Scale <= 0 {
		o.Scale = 1.0 / 60
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = dispatcher.DefaultMaxBackoff
	}
	if o.RetryFor <= 0 {
		o.RetryFor = dispatcher.DefaultRetryFor
	}
	scaled := func(d time.Duration) time.Duration { return time.Duration(float64(d) * o.Scale) }
	s, err := Start(ctx, Options{
		Env: config.Map(map[string]string{
			"DEV_ADDR": "127.0.0.1:0", "SQIBS_SIM_ADDR": "127.0.0.1:0", "BUILDKITE_SIM_ADDR": "127.0.0.1:0",
			"BUILDKITE_WEBHOOK_TOKEN": outageToken, "ALERT_BRANCHES": "*",
		}),
		Stderr:      o.Stderr,
		Queue:       memqueue.Options{VisibilityTimeout: scaled(180 * time.Second)}, // the template's
		BackoffBase: scaled(time.Second),
		MaxBackoff:  scaled(o.MaxBackoff),
		RetryFor:    scaled(o.RetryFor),
		// The template's DispatcherMaxConcurrency default.
		Poller: poller.Options{Concurrency: 5, Wait: 100 * time.Millisecond},
	})
	if err != nil {
		return OutageResult{}, fmt.Errorf("outage drill: start the stack: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
	}()

	type event struct {
		id     string
		number int
		at     time.Time // sent; then delivered
	}
	var (
		down      atomic.Bool
		refused   atomic.Int64
		mu        sync.Mutex
		sent      []event
		delivered = map[string][]event{} // by incident, in arrival order
	)
	s.Sim.SetFault(func(_ int, body []byte) *sqibssim.Fault {
		if down.Load() {
			refused.Add(1)
			return &sqibssim.Fault{Status: http.StatusServiceUnavailable}
		}
		id, number := eventOf(body)
		mu.Lock()
		delivered[id] = append(delivered[id], event{id, number, time.Now()})
		mu.Unlock()
		return nil
	})

	start := time.Now()
	downAt := start.Add(scaled(o.Every))
	recoverAt := downAt.Add(scaled(o.Outage))
	trafficEnd := recoverAt.Add(scaled(o.After))
	go func() {
		time.Sleep(time.Until(downAt))
		down.Store(true)
		time.Sleep(time.Until(recoverAt))
		down.Store(false)
	}()

	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var sendErr error
	var errOnce sync.Once
	for i := range o.Incidents {
		pipeline := fmt.Sprintf("svc-%02d", i)
		id := "acme/" + pipeline + "/main"
		wg.Go(func() {
			next := start.Add(scaled(o.Every) * time.Duration(i) / time.Duration(o.Incidents))
			for k := 0; next.Before(trafficEnd); k++ {
				time.Sleep(time.Until(next))
				number := 1000 + k
				body, err := buildWebhook(o.Fixture, pipeline, "main", number, k%2 == 0)
				if err == nil {
					_, err = PostWebhook(client, s.ReceiverURL, outageToken, body)
				}
				if err != nil {
					errOnce.Do(func() { sendErr = fmt.Errorf("outage drill: %s #%d: %w", id, number, err) })
					return
				}
				mu.Lock()
				sent = append(sent, event{id, number, time.Now()})
				mu.Unlock()
				next = next.Add(scaled(o.Every))
			}
		})
	}
	wg.Wait()
	if sendErr != nil {
		return OutageResult{}, sendErr
	}

	// Everything queued is delivered within a MAX_BACKOFF or two of the
	// recovery; the bound only stops a broken run.
	all := func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, d := range delivered {
			n += len(d)
		}
		return n >= len(sent)
	}
	deadline := time.Now().Add(scaled(4*o.MaxBackoff+o.After) + 30*time.Second)
	for !all() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(scaled(o.MaxBackoff)) // room for a repeat to show

	mu.Lock()
	defer mu.Unlock()
	res := OutageResult{Sent: len(sent), Refused: int(refused.Load()), DeadLetters: s.DeadLetters()}
	want := map[string][]int{}
	for _, e := range sent {
		want[e.id] = append(want[e.id], e.number)
	}
	var lastBacklog time.Time
	for _, id := range slices.Sorted(maps.Keys(want)) {
		got := delivered[id]
		at := map[int]time.Time{}
		var order []int
		for _, d := range got {
			if _, again := at[d.number]; again {
				res.Repeats++
				continue
			}
			at[d.number] = d.at
			order = append(order, d.number)
		}
		for _, n := range want[id] {
			if _, ok := at[n]; !ok {
				res.Missing = append(res.Missing, fmt.Sprintf("%s #%d", id, n))
			}
		}
		if !slices.Equal(order, want[id]) && len(order) == len(want[id]) {
			res.OutOfOrder = append(res.OutOfOrder, fmt.Sprintf("%s: sent %v, delivered %v", id, want[id], order))
		}
	}
	for _, e := range sent {
		if !e.at.Before(recoverAt) {
			continue
		}
		res.Backlog++
		if i := slices.IndexFunc(delivered[e.id], func(d event) bool { return d.number == e.number }); i >= 0 {
			if at := delivered[e.id][i].at; at.After(lastBacklog) {
				lastBacklog = at
			}
		}
	}
	if lastBacklog.After(recoverAt) {
		res.Drain = time.Duration(float64(lastBacklog.Sub(recoverAt)) / o.Scale)
	}
	return res, nil
}

// eventOf reads the incident id and build number of an SQIBS request body.
func eventOf(body []byte) (id string, number int) {
	var p struct {
		Event struct {
			ID     string `json:"id"`
			Number int    `json:"build_number"`
		} `json:"event"`
	}
	_ = json.Unmarshal(body, &p) // an unreadable body shows up as an unknown event
	return p.Event.ID, p.Event.Number
}

// buildWebhook is fixture, a build.finished body, rewritten as build number
// of pipeline (org acme) on branch, failed or passed, with a build id of
// its own (the event identity the receiver deduplicates by).
func buildWebhook(fixture []byte, pipeline, branch string, number int, failed bool) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(fixture, &m); err != nil {
		return nil, fmt.Errorf("webhook fixture: %w", err)
	}
	build, ok1 := m["build"].(map[string]any)
	pl, ok2 := m["pipeline"].(map[string]any)
	if !ok1 || !ok2 {
		return nil, errors.New("webhook fixture: want a build and a pipeline object")
	}
	state := "passed"
	if failed {
		state = "failed"
	}
	build["number"], build["state"], build["branch"] = number, state, branch
	build["id"] = fmt.Sprintf("acme/%s/%s#%d", pipeline, branch, number)
	build["web_url"] = fmt.Sprintf("https://buildkite.com/acme/%s/builds/%d", pipeline, number)
	build["url"] = fmt.Sprintf("https://api.buildkite.com/v2/organizations/acme/pipelines/%s/builds/%d", pipeline, number)
	pl["slug"], pl["name"] = pipeline, pipeline
	pl["id"] = "pipeline-" + pipeline // one id per pipeline, as in Buildkite: the incident state follows renames by it
	pl["web_url"] = "https://buildkite.com/acme/" + pipeline
	pl["url"] = "https://api.buildkite.com/v2/organizations/acme/pipelines/" + pipeline
	return json.Marshal(m)
}

// PostWebhook sends body to the receiver at url as Buildkite does, signed
// with token, and returns the queued message id; any answer but 200
// queued is an error.
func PostWebhook(c *http.Client, url, token string, body []byte) (string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Buildkite-Event", "build.finished")
	req.Header.Set("X-Buildkite-Signature", buildkite.Sign(token, time.Now(), body))
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ Status, ID string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || out.Status != "queued" || out.ID == "" {
		return "", fmt.Errorf("receiver answered %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return out.ID, nil
}
