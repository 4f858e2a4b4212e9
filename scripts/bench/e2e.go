package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/local/devstack"
	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/local/tailbuf"
)

const benchWebhookToken = "bench-webhook-token"

// endToEnd runs the whole bridge in process (receiver HTTP endpoint,
// in-process FIFO queue, dispatcher fed by the poller, SQIBS simulator,
// in-process incident state) and sends o.webhooks signed webhooks from
// o.senders keep-alive connections. A webhook's latency runs from just
// before it is sent to the simulator receiving its incident event (the
// simulator's per-call hook).
func endToEnd(ctx context.Context, root string, o options, res *Results) error {
	r, err := runE2E(ctx, root, o, nil)
	if err != nil {
		return err
	}
	res.set("e2e_webhooks_per_s", float64(o.webhooks)/r.elapsed.Seconds())
	res.set("e2e_p50_ms", percentile(r.latencies, 50))
	res.set("e2e_p99_ms", percentile(r.latencies, 99))
	res.note("e2e: %d signed 5 KB build.finished webhooks (%d incidents, failed/passed alternating) from %d keep-alive senders, in-process queue, %d parallel dispatcher invocations of ≤ 10 records: all reached SQIBS in %s; SQIBS calls %d",
		o.webhooks, groups, o.senders, o.pollers, r.elapsed.Round(time.Millisecond), r.sqibsCalls)
	return nil
}

// e2eRun is what one end-to-end run measured.
type e2eRun struct {
	elapsed    time.Duration // first webhook sent → last incident event received
	latencies  []float64     // ms, one per webhook
	sqibsCalls int
}

// runE2E starts the local stack with env over the defaults, sends
// o.webhooks webhooks, waits until each reached SQIBS and the queue is
// empty (every message handled, its state written), and stops the stack.
func runE2E(ctx context.Context, root string, o options, env map[string]string) (e2eRun, error) {
	hooks, err := loadWebhooks(root)
	if err != nil {
		return e2eRun{}, err
	}
	n := o.webhooks
	bodies := make([][]byte, n) // made before the clock starts
	for i := range bodies {
		bodies[i] = hooks.body(i)
	}

	vars := map[string]string{
		"DEV_ADDR":                "127.0.0.1:0",
		"SQIBS_SIM_ADDR":          "127.0.0.1:0",
		"BUILDKITE_SIM_ADDR":      "127.0.0.1:0",
		"BUILDKITE_WEBHOOK_TOKEN": benchWebhookToken,
		"SQIBS_API_TOKEN":         "bench-sqibs-token",
		"ALERT_BRANCHES":          "*",
	}
	maps.Copy(vars, env)
	logs := &tailbuf.Buffer{}
	stack, err := devstack.Start(ctx, devstack.Options{
		Env:    config.Map(vars),
		Stderr: logs,
		Poller: poller.Options{Concurrency: o.pollers},
	})
	if err != nil {
		return e2eRun{}, fmt.Errorf("start the local stack: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		_ = stack.Shutdown(sctx)
	}()

	// Times are nanoseconds since t0 (monotonic); 0 means not yet.
	sent := make([]atomic.Int64, n)
	done := make([]atomic.Int64, n)
	var processed atomic.Int64
	t0 := time.Now()
	since := func() int64 { return max(int64(time.Since(t0)), 1) }
	stack.Sim.SetFault(func(_ int, body []byte) *sqibssim.Fault {
		i := buildNumberOf(body) - firstNumber
		if i >= 0 && i < n && done[i].CompareAndSwap(0, since()) {
			processed.Add(1)
		}
		return nil
	})

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = o.senders
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	defer tr.CloseIdleConnections()

	var next atomic.Int64
	var sendErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range o.senders {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				sent[i].Store(since())
				if err := send(ctx, client, stack.ReceiverURL, bodies[i]); err != nil {
					errOnce.Do(func() { sendErr = fmt.Errorf("webhook %d: %w", i, err) })
					next.Store(int64(n)) // stop every sender: fail loudly, not slowly
					return
				}
			}
		})
	}
	wg.Wait()
	if sendErr != nil {
		return e2eRun{}, fmt.Errorf("e2e: %w; last logs: %s", sendErr, logs.String())
	}

	wctx, cancel := context.WithTimeout(ctx, o.e2eTimeout)
	defer cancel()
	if err := stack.Sim.Wait(wctx, func(*sqibssim.Server) bool { return processed.Load() == int64(n) }); err != nil {
		st := stack.Queue.Stats()
		return e2eRun{}, fmt.Errorf("e2e: only %d of %d webhooks reached SQIBS within %s (queue: %d visible, %d in flight, %d dead): %w; last logs: %s",
			processed.Load(), n, o.e2eTimeout, st.Visible, st.InFlight, st.Dead, err, logs.String())
	}
	// The last deliveries' state writes come after SQIBS answered.
	for st := stack.Queue.Stats(); st.Visible+st.InFlight > 0; st = stack.Queue.Stats() {
		if wctx.Err() != nil {
			return e2eRun{}, fmt.Errorf("e2e: the queue did not drain within %s: %d visible, %d in flight", o.e2eTimeout, st.Visible, st.InFlight)
		}
		time.Sleep(5 * time.Millisecond)
	}

	first, last := sent[0].Load(), int64(0)
	r := e2eRun{latencies: make([]float64, n), sqibsCalls: stack.Sim.Calls()}
	for i := range n {
		s, d := sent[i].Load(), done[i].Load()
		first, last = min(first, s), max(last, d)
		r.latencies[i] = float64(d-s) / float64(time.Millisecond)
	}
	r.elapsed = time.Duration(last - first)
	return r, nil
}

// send posts one webhook as Buildkite does and wants it queued.
func send(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Buildkite-Event", "build.finished")
	req.Header.Set("X-Buildkite-Signature", buildkite.Sign(benchWebhookToken, time.Now(), body))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"queued"`) {
		return fmt.Errorf("receiver answered %d %s, want 200 queued", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}
