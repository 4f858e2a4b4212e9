package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/runtimeapi"
	"github.com/callgoose/buildkite-sqibs/internal/local/tailbuf"
)

// unreachable is an address nothing listens on: configuration that must be
// valid but is never called at start.
const unreachable = "http://127.0.0.1:1"

// awsEnv is the environment every bootstrap runs with here: what Lambda
// gives a function (region, credentials), which the bootstraps read from the
// environment alone (internal/awsenv) without any network call, plus
// endpoints nothing listens on. So start-up is offline and deterministic.
func awsEnv() []string {
	return []string{
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=bench",
		"AWS_SECRET_ACCESS_KEY=bench",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_ENDPOINT_URL_SQS=" + unreachable,
		"AWS_ENDPOINT_URL_SECRETS_MANAGER=" + unreachable,
		"ALERT_BRANCHES=*",
	}
}

func receiverStartEnv() []string {
	return append(awsEnv(), "AWS_LAMBDA_FUNCTION_NAME=receiver",
		"QUEUE_URL="+unreachable+"/000000000000/bench.fifo", "BUILDKITE_WEBHOOK_TOKEN=x")
}

func dispatcherStartEnv() []string {
	return append(awsEnv(), "AWS_LAMBDA_FUNCTION_NAME=dispatcher",
		"SQIBS_URL="+unreachable+"/v1/process", "SQIBS_API_TOKEN=x")
}

// initTimeout is Lambda's bound on a runtime's init phase.
const initTimeout = 10 * time.Second

// startOnce runs bin against a fresh Runtime API and returns the time from
// exec to its first /next request, then stops it.
func startOnce(ctx context.Context, bin string, env []string) (time.Duration, error) {
	srv, err := runtimeapi.Start()
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	first, initErr := srv.FirstNext(), srv.InitError()
	logs := &tailbuf.Buffer{}
	p, err := runtimeapi.Exec(ctx, bin, env, srv, nil, logs)
	if err != nil {
		return 0, err
	}
	defer p.Stop()
	return waitReady(ctx, p, first, initErr, logs)
}

// waitReady waits for a started bootstrap's first /next request and returns
// its init time.
func waitReady(ctx context.Context, p *runtimeapi.Process, first <-chan time.Time, initErr <-chan []byte, logs *tailbuf.Buffer) (time.Duration, error) {
	timer := time.NewTimer(initTimeout)
	defer timer.Stop()
	select {
	case t, ok := <-first:
		if !ok {
			return 0, errors.New("runtime API closed during init")
		}
		return t.Sub(p.Started()), nil
	case body := <-initErr:
		return 0, fmt.Errorf("init error: %s", strings.TrimSpace(string(body)))
	case <-p.Done():
		return 0, fmt.Errorf("exited during init: %v; stderr: %s", p.Err(), logs.String())
	case <-timer.C:
		return 0, fmt.Errorf("no /next request within %s; stderr: %s", initTimeout, logs.String())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// startRatio times the start of each bootstrap n times, interleaved (the
// order rotating each round) so all four share the machine's noise, after
// one unrecorded warm-up round.
func startRatio(ctx context.Context, bins hostBinaries, n int, res *Results) error {
	type boot struct {
		name, bin string
		env       []string
		samples   []float64 // ms
	}
	boots := []*boot{
		{name: "receiver", bin: bins.receiver, env: receiverStartEnv()},
		{name: "dispatcher", bin: bins.dispatcher, env: dispatcherStartEnv()},
		{name: "hello", bin: bins.hello, env: awsEnv()},
		{name: "hello+SDK", bin: bins.helloSDK, env: awsEnv()},
	}
	for round := -1; round < n; round++ {
		for k := range boots {
			b := boots[(max(round, 0)+k)%len(boots)]
			d, err := startOnce(ctx, b.bin, b.env)
			if err != nil {
				return fmt.Errorf("start_ratio_vs_hello: %s bootstrap: %w", b.name, err)
			}
			if round >= 0 {
				b.samples = append(b.samples, float64(d)/float64(time.Millisecond))
			}
		}
	}
	recv, disp, hello, helloSDK := median(boots[0].samples), median(boots[1].samples), median(boots[2].samples), median(boots[3].samples)
	if hello <= 0 {
		return errors.New("start_ratio_vs_hello: hello bootstrap start measured as 0")
	}
	res.set("start_ratio_vs_hello", max(recv, disp)/hello)
	if helloSDK > 0 {
		res.set("start_ratio_vs_hello_sdk", max(recv, disp)/helloSDK)
	}
	res.note("start (exec → first /next, median of %d, host %s builds, same flags): receiver %.2f ms, dispatcher %.2f ms, hello %.2f ms",
		n, hostPlatform(), recv, disp, hello)
	res.note("what limits the ratio: hello with the functions' SDK clients created (SQS, Secrets Manager, DynamoDB) starts in %.2f ms (%.2f× hello); our bootstraps are %.2f× that (start_ratio_vs_hello_sdk)",
		helloSDK, helloSDK/hello, max(recv, disp)/helloSDK)
	return nil
}
