package dispatcher

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

// Retry policy defaults (DESIGN §2: RETRY_FOR, MAX_BACKOFF).
const (
	DefaultRetryFor   = 24 * time.Hour
	DefaultMaxBackoff = 2 * time.Minute
	// LongestMaxBackoff is SQS's longest visibility timeout.
	LongestMaxBackoff = 12 * time.Hour
	// LongestRetryFor is SQS's longest message retention: an event retried
	// longer would expire on the queue instead of reaching the DLQ.
	LongestRetryFor = 14 * 24 * time.Hour
	// ReceiveMargin is kept back from queue.MaxReceiveCount for receives
	// that come without a backoff: a group's tail handed back because an
	// invocation ran short of time (DESIGN §5's deadline rule). 50 such
	// receives are an hour of deadline-cut invocations in a row.
	ReceiveMargin = 50
)

// backoffFor is min(2^receives × base, maxBackoff) × (0.8 + 0.4 × jitter),
// never more than maxBackoff: so after SQIBS recovers, every group's head
// is retried within maxBackoff. SQS takes whole seconds, so with a base of
// a second or more the delay is rounded to them.
func backoffFor(receives int, base, maxBackoff time.Duration, jitter float64) time.Duration {
	receives = max(receives, 1)
	d := time.Duration(math.Min(math.Pow(2, float64(receives))*float64(base), float64(maxBackoff)) * (0.8 + 0.4*jitter))
	d = min(d, maxBackoff)
	if base >= time.Second {
		d = d.Round(time.Second)
	}
	return d
}

// MaxRetryFor is the longest RETRY_FOR that SQS's redrive net
// (queue.MaxReceiveCount receives, less ReceiveMargin) cannot cut short with
// this MAX_BACKOFF. It rests on one property of FIFO queues: a message is
// only ever received together with every message ahead of it in its group,
// so its receive count is never above theirs, and each of its receives is
// followed by the backoff of the message that failed (its own or one ahead
// of it), which is at least the shortest backoff of its own count. So by its
// n-th receive a message is at least the sum of the n-1 shortest backoffs
// old, held back or not, and once older than RETRY_FOR the dispatcher
// dead-letters it at its next failure.
func MaxRetryFor(maxBackoff time.Duration) time.Duration {
	var age time.Duration
	for n := 1; n < queue.MaxReceiveCount-ReceiveMargin; n++ {
		age += backoffFor(n, time.Second, maxBackoff, 0)
	}
	return age
}

// MinMaxBackoff is the shortest MAX_BACKOFF, in whole seconds, with which
// retryFor is at most MaxRetryFor; 0 when even LongestMaxBackoff is too short.
func MinMaxBackoff(retryFor time.Duration) time.Duration {
	lo, hi := time.Second, LongestMaxBackoff
	if MaxRetryFor(hi) < retryFor {
		return 0
	}
	for lo < hi { // MaxRetryFor grows with maxBackoff
		mid := (lo + hi) / 2 / time.Second * time.Second
		if MaxRetryFor(mid) >= retryFor {
			hi = mid
		} else {
			lo = mid + time.Second
		}
	}
	return lo
}

// checkRetryPolicy says what is wrong with a RETRY_FOR and MAX_BACKOFF pair,
// naming the variable to change; "" when nothing is.
func checkRetryPolicy(retryFor, maxBackoff time.Duration, retrySet bool) (name, want string) {
	switch {
	case maxBackoff < time.Second || maxBackoff > LongestMaxBackoff:
		return "MAX_BACKOFF", fmt.Sprintf("a duration from 1s to %s (SQS's longest visibility timeout)", LongestMaxBackoff)
	case retryFor > LongestRetryFor:
		return "RETRY_FOR", fmt.Sprintf("at most %s (SQS's longest message retention)", LongestRetryFor)
	case retryFor <= MaxRetryFor(maxBackoff):
		return "", ""
	case retrySet:
		return "RETRY_FOR", fmt.Sprintf("at most %s with MAX_BACKOFF=%s, or SQS's redrive (%d receives) would dead-letter events first",
			MaxRetryFor(maxBackoff).Truncate(time.Minute), maxBackoff, queue.MaxReceiveCount)
	default:
		return "MAX_BACKOFF", fmt.Sprintf("at least %s with RETRY_FOR=%s, or SQS's redrive (%d receives) would dead-letter events first",
			MinMaxBackoff(retryFor), retryFor, queue.MaxReceiveCount)
	}
}

// sentAt is when SQS took the message (its SentTimestamp, epoch ms).
func sentAt(r events.SQSMessage) (time.Time, bool) {
	ms, err := strconv.ParseInt(r.Attributes["SentTimestamp"], 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

func receives(r events.SQSMessage) int {
	n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
	return max(n, 1)
}
