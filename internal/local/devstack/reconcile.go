package devstack

import (
	"context"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/callgoose/buildkite-sqibs/internal/config"
)

// maxRun bounds one reconciler run, as the function's timeout does in Lambda.
const maxRun = time.Minute

// reconcileEvery is RECONCILE_EVERY ("off" = no reconciler), or override
// when set; a bad value is recorded in env's error.
func reconcileEvery(env *config.Reader, override time.Duration) time.Duration {
	if override > 0 {
		return override
	}
	if env.String("RECONCILE_EVERY", "") == "off" {
		return 0
	}
	return env.Duration("RECONCILE_EVERY", DefaultReconcileEvery)
}

// startReconciler runs the reconciler every interval, as the schedule does
// in Lambda: one run at a time (a tick that comes during a run is dropped,
// as the reserved concurrency of 1 drops an overlapping invocation), each
// through the function's own handler, bounded like its timeout.
func (s *Stack) startReconciler(ctx context.Context, every time.Duration) {
	ctx, s.reconcileStop = context.WithCancel(ctx)
	s.reconcileDone = make(chan struct{})
	h := s.Reconciler
	go func() {
		defer close(s.reconcileDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx := lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: "dev-" + strconv.Itoa(n)})
			rctx, cancel := context.WithTimeout(rctx, min(every, maxRun))
			if _, err := h.Handle(rctx, events.EventBridgeEvent{DetailType: "Scheduled Event", Source: "aws.events"}); err != nil && ctx.Err() == nil {
				s.Log.Error("reconciler run failed", "error", err.Error())
			}
			cancel()
		}
	}()
}

// stopReconciler ends the loop after the run in hand.
func (s *Stack) stopReconciler() {
	if s.reconcileStop == nil {
		return
	}
	s.reconcileStop()
	<-s.reconcileDone
}

// shortDuration prints 10m rather than 10m0s.
func shortDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}
