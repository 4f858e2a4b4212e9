package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/local/runtimeapi"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/local/tailbuf"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

// Function timeouts as template.yaml sets them: the dispatcher keeps
// 2×SQIBS_TIMEOUT+1s of its deadline in reserve, so it needs its real one.
const (
	receiverTimeout   = 5 * time.Second
	dispatcherTimeout = 30 * time.Second
)

const (
	benchSQIBSToken = "bench-sqibs-token"
	recordsPerBatch = 10
	benchQueueARN   = "arn:aws:sqs:us-east-1:000000000000:bench.fifo"
	purgeEvery      = 100
)

// lambdaRun is a bootstrap running against its own Runtime API.
type lambdaRun struct {
	srv     *runtimeapi.Server
	p       *runtimeapi.Process
	logs    *tailbuf.Buffer
	timeout time.Duration // the function's timeout
	ms      []float64     // each invocation's duration as the Runtime API saw it, ms
}

// durations is the median and p99 invocation duration so far, in ms.
func (l *lambdaRun) durations() (p50, p99 float64) {
	return median(l.ms), percentile(l.ms, 99)
}

// startLambda runs bin and waits until it asks for its first event.
func startLambda(ctx context.Context, bin string, env []string, timeout time.Duration) (*lambdaRun, error) {
	srv, err := runtimeapi.Start()
	if err != nil {
		return nil, err
	}
	first, initErr := srv.FirstNext(), srv.InitError()
	l := &lambdaRun{srv: srv, logs: &tailbuf.Buffer{}, timeout: timeout}
	// The functions' stdout carries only metrics (EMF) lines: dropped.
	if l.p, err = runtimeapi.Exec(ctx, bin, env, srv, nil, l.logs); err != nil {
		srv.Close()
		return nil, err
	}
	if _, err := waitReady(ctx, l.p, first, initErr, l.logs); err != nil {
		l.stop()
		return nil, err
	}
	return l, nil
}

// invoke sends one event and decodes the function's response into out.
func (l *lambdaRun) invoke(ctx context.Context, event any, out any) error {
	b, err := json.Marshal(event)
	if err != nil {
		return err
	}
	r, err := l.p.Invoke(ctx, b, l.timeout)
	if err != nil {
		return fmt.Errorf("%w; stderr: %s", err, l.logs.String())
	}
	l.ms = append(l.ms, float64(r.Duration.Microseconds())/1000)
	if r.Err != nil {
		return fmt.Errorf("function error %s: %s", r.Err.Type, r.Err.Message)
	}
	if err := json.Unmarshal(r.Payload, out); err != nil {
		return fmt.Errorf("response %s: %w", r.Payload, err)
	}
	return nil
}

// peakMiB is the bootstrap's peak RSS so far, in MiB.
func (l *lambdaRun) peakMiB() (float64, error) {
	b := l.p.PeakRSS()
	if b <= 0 {
		return 0, fmt.Errorf("peak RSS unknown on %s", hostPlatform())
	}
	return float64(b) / mib, nil
}

func (l *lambdaRun) stop() {
	_ = l.p.Stop()
	l.srv.Close()
}

// receiverRSS invokes the receiver bootstrap n times with function URL
// events carrying signed 5 KB build.finished bodies; it publishes each to a
// real SQS FIFO queue on moto.
func receiverRSS(ctx context.Context, root, bin string, moto *motoServer, n int, res *Results) error {
	hooks, err := loadWebhooks(root)
	if err != nil {
		return err
	}
	queueURL, err := moto.fifoQueue(ctx, "bench-receiver")
	if err != nil {
		return err
	}
	env := append(awsEnv(), "AWS_LAMBDA_FUNCTION_NAME=receiver", "AWS_ENDPOINT_URL_SQS="+moto.URL,
		"QUEUE_URL="+queueURL, "BUILDKITE_WEBHOOK_TOKEN="+benchWebhookToken)
	l, err := startLambda(ctx, bin, env, receiverTimeout)
	if err != nil {
		return fmt.Errorf("receiver bootstrap: %w", err)
	}
	defer l.stop()

	// moto's SendMessage slows down with the depth of a FIFO queue, so the
	// queue is counted and purged every purgeEvery messages: the count
	// proves every message arrived, and moto stays fast.
	queued := 0
	for i := range n {
		if i > 0 && i%purgeEvery == 0 {
			c, err := moto.drain(ctx, queueURL)
			if err != nil {
				return fmt.Errorf("receiver: %w", err)
			}
			queued += c
		}
		body := hooks.body(i)
		ev := events.LambdaFunctionURLRequest{
			Headers: map[string]string{
				"content-type":          "application/json",
				"x-buildkite-event":     "build.finished",
				"x-buildkite-signature": buildkite.Sign(benchWebhookToken, time.Now(), body),
			},
			Body: string(body),
		}
		ev.RequestContext.HTTP.Method = http.MethodPost
		ev.RequestContext.RequestID = "bench-" + strconv.Itoa(i)
		var resp events.LambdaFunctionURLResponse
		if err := l.invoke(ctx, ev, &resp); err != nil {
			return fmt.Errorf("receiver invocation %d: %w", i, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("receiver invocation %d: status %d %s, want 200", i, resp.StatusCode, resp.Body)
		}
	}
	peak, err := l.peakMiB()
	if err != nil {
		return err
	}
	c, err := moto.drain(ctx, queueURL)
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	if queued += c; queued != n {
		return fmt.Errorf("receiver: %d messages reached the queue after %d invocations answered 200", queued, n)
	}
	res.set("receiver_rss_mb", peak)
	p50, p99 := l.durations()
	res.note("receiver invocation duration (Runtime API view, SendMessage to moto included): median %.2f ms, p99 %.2f ms", p50, p99)
	res.note("receiver RSS: peak (VmHWM) of the %s bootstrap over %d invocations, signed 5 KB webhooks published to SQS FIFO on moto_server (%d messages arrived)",
		hostPlatform(), n, queued)
	return nil
}

// dispatcherRSS invokes the dispatcher bootstrap n times with SQS events of
// 10 records each; it posts every record to the SQIBS simulator.
func dispatcherRSS(ctx context.Context, root, bin string, n int, res *Results) error {
	hooks, err := loadWebhooks(root)
	if err != nil {
		return err
	}
	sim := sqibssim.New(benchSQIBSToken)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("SQIBS simulator: %w", err)
	}
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer func() { sim.Close(); _ = hs.Close() }()

	env := append(awsEnv(), "AWS_LAMBDA_FUNCTION_NAME=dispatcher",
		"SQIBS_URL=http://"+ln.Addr().String()+"/v1/process", "SQIBS_API_TOKEN="+benchSQIBSToken)
	l, err := startLambda(ctx, bin, env, dispatcherTimeout)
	if err != nil {
		return fmt.Errorf("dispatcher bootstrap: %w", err)
	}
	defer l.stop()

	for k := range n {
		ev, err := sqsEvent(hooks, k*recordsPerBatch, recordsPerBatch)
		if err != nil {
			return err
		}
		var resp events.SQSEventResponse
		if err := l.invoke(ctx, ev, &resp); err != nil {
			return fmt.Errorf("dispatcher invocation %d: %w", k, err)
		}
		if len(resp.BatchItemFailures) > 0 {
			return fmt.Errorf("dispatcher invocation %d: %d records failed; stderr: %s", k, len(resp.BatchItemFailures), l.logs.String())
		}
	}
	peak, err := l.peakMiB()
	if err != nil {
		return err
	}
	if got, want := sim.Calls(), n*recordsPerBatch; got != want {
		return fmt.Errorf("dispatcher: SQIBS simulator processed %d calls, want %d", got, want)
	}
	res.set("dispatcher_rss_mb", peak)
	p50, p99 := l.durations()
	res.note("dispatcher invocation duration (%d records, local SQIBS simulator): median %.2f ms, p99 %.2f ms", recordsPerBatch, p50, p99)
	res.note("dispatcher RSS: peak (VmHWM) of the %s bootstrap over %d invocations of %d SQS records each, every record posted to the SQIBS simulator (%d calls)",
		hostPlatform(), n, recordsPerBatch, sim.Calls())
	return nil
}

// sqsEvent is what the SQS event source mapping delivers for webhooks
// first..first+count-1 once the receiver has queued them.
func sqsEvent(hooks *webhooks, first, count int) (events.SQSEvent, error) {
	var ev events.SQSEvent
	now := time.Now()
	for i := first; i < first+count; i++ {
		p, err := buildkite.Parse(hooks.body(i), "build.finished")
		if err != nil {
			return ev, fmt.Errorf("webhook %d: %w", i, err)
		}
		s := specOf(i)
		msg, err := queue.NewMessage(p, "acme/"+s.Pipeline+"/"+s.Branch, "bench-"+strconv.Itoa(i), now)
		if err != nil {
			return ev, fmt.Errorf("webhook %d: %w", i, err)
		}
		ms := strconv.FormatInt(now.UnixMilli(), 10)
		ev.Records = append(ev.Records, events.SQSMessage{
			MessageId:     fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			ReceiptHandle: "bench-receipt-" + strconv.Itoa(i),
			Body:          string(msg.Body),
			Attributes: map[string]string{
				"ApproximateReceiveCount":          "1",
				"SentTimestamp":                    ms,
				"ApproximateFirstReceiveTimestamp": ms,
				"MessageGroupId":                   msg.GroupID,
				"MessageDeduplicationId":           msg.DedupID,
				"SequenceNumber":                   strconv.Itoa(i + 1),
			},
			EventSource:    "aws:sqs",
			EventSourceARN: benchQueueARN,
			AWSRegion:      "us-east-1",
		})
	}
	return ev, nil
}
