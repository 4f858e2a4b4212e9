package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// measureAll measures the sections o asks for, in an order that keeps the
// timed ones (start-up, end to end) away from other load: builds first
// (with moto starting alongside), then start-up, end to end, and the two RSS
// runs together (peak memory does not mind sharing the CPU). A section that
// fails leaves its figures out and the others still run.
func measureAll(ctx context.Context, o options, progress io.Writer) (Results, error) {
	var res Results
	var errs []error
	begin := time.Now()
	step := func(what string) func() {
		t := time.Now()
		fmt.Fprintf(progress, "· %s ...\n", what)
		return func() { fmt.Fprintf(progress, "  done in %s\n", time.Since(t).Round(10*time.Millisecond)) }
	}

	if o.runs(secGo) {
		errs = append(errs, goFigures(o.goBench, &res))
	}
	if !o.runs(secSize) && !o.runs(secStart) && !o.runs(secE2E) && !o.runs(secState) && !o.runs(secRSS) && !o.runs(secRecov) {
		return res, errors.Join(errs...)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	dir, err := os.MkdirTemp("", "bench-bootstraps-")
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	defer os.RemoveAll(dir)

	type motoStart struct {
		m   *motoServer
		err error
	}
	motoCh := make(chan motoStart, 1)
	if o.runs(secRSS) || o.runs(secState) {
		go func() {
			m, err := startMoto(ctx)
			motoCh <- motoStart{m, err}
		}()
		defer func() {
			if ms := <-motoCh; ms.m != nil {
				ms.m.Stop()
			}
		}()
	}

	if o.runs(secSize) {
		done := step("building the linux/arm64 bootstraps (as make build)")
		errs = append(errs, bootstrapSizes(ctx, root, dir, &res))
		done()
	}
	var bins hostBinaries
	binErr := errors.New("not built")
	if o.runs(secStart) || o.runs(secRSS) {
		done := step("building receiver, dispatcher and hello bootstraps for " + hostPlatform())
		bins, binErr = buildHost(ctx, root, dir)
		errs = append(errs, binErr)
		done()
	}
	if o.runs(secStart) && binErr == nil {
		done := step(fmt.Sprintf("timing bootstrap starts (%d rounds of 4: receiver, dispatcher, hello, hello+SDK)", o.starts))
		errs = append(errs, startRatio(ctx, bins, o.starts, &res))
		done()
	}
	if o.runs(secE2E) {
		done := step(fmt.Sprintf("end to end: %d webhooks through the local stack", o.webhooks))
		errs = append(errs, endToEnd(ctx, root, o, &res))
		done()
	}
	if o.runs(secState) {
		done := step(fmt.Sprintf("incident state: %d webhooks end to end with the table on moto", min(o.webhooks, stateWebhooks)))
		ms := <-motoCh
		motoCh <- ms // for the deferred stop
		switch {
		case errors.Is(ms.err, moto.ErrAbsent) && os.Getenv("REQUIRE_MOTO") != "1":
			res.note("state_calls_per_event not measured: %v", ms.err)
		case ms.err != nil:
			errs = append(errs, fmt.Errorf("state_calls_per_event: %w", ms.err))
		default:
			errs = append(errs, stateCalls(ctx, root, ms.m, o, &res))
		}
		done()
	}
	if o.runs(secRSS) && binErr == nil {
		done := step(fmt.Sprintf("peak RSS: %d invocations of each bootstrap", o.invocations))
		ms := <-motoCh
		motoCh <- ms // for the deferred stop
		var recv, disp Results
		var recvErr, dispErr error
		var wg sync.WaitGroup
		wg.Go(func() { dispErr = dispatcherRSS(ctx, root, bins.dispatcher, o.invocations, &disp) })
		switch {
		case errors.Is(ms.err, moto.ErrAbsent) && os.Getenv("REQUIRE_MOTO") != "1":
			recv.note("receiver_rss_mb not measured: %v; the receiver needs SQS to publish to", ms.err)
		case ms.err != nil:
			recvErr = fmt.Errorf("receiver_rss_mb: %w", ms.err)
		default:
			wg.Go(func() { recvErr = receiverRSS(ctx, root, bins.receiver, ms.m, o.invocations, &recv) })
		}
		wg.Wait()
		res.merge(recv)
		res.merge(disp)
		errs = append(errs, recvErr, dispErr)
		done()
	}
	if o.runs(secRecov) {
		done := step("recovery: a 10-minute SQIBS outage under steady traffic, on a clock 60× as fast")
		errs = append(errs, recovery(ctx, root, &res))
		done()
	}
	res.note("measured in %s on %s, %d CPUs", time.Since(begin).Round(time.Second), hostPlatform(), runtime.NumCPU())
	return res, errors.Join(errs...)
}

// merge adds other's figures and notes to r.
func (r *Results) merge(other Results) {
	for k, v := range other.Values {
		r.set(k, v)
	}
	r.Notes = append(r.Notes, other.Notes...)
}
