package queue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

// receiverBudget is the receiver's whole budget (receiver.Config.Budget),
// within which Publish runs when the webhook token is cached.
const receiverBudget = 2800 * time.Millisecond

// slowQueue is a FIFO queue on moto reached through a proxy that holds
// every answer back by delay(): slow is a client through the proxy (the
// SDK as the receiver builds it), direct one without.
func slowQueue(t testing.TB, delay func() time.Duration) (slow, direct *sqs.Client, queueURL string) {
	t.Helper()
	srv := moto.Start(t)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testkit.DelayProxy(t, u.Host, delay)
	cfg := srv.AWSConfig(t)
	direct = sqs.NewFromConfig(cfg, SQSOptions)
	slow = sqs.NewFromConfig(cfg, SQSOptions, func(o *sqs.Options) { o.BaseEndpoint = aws.String("http://" + proxy) })
	return slow, direct, moto.CreateFIFO(t, direct, "slow.fifo")
}

// queued is how many messages the queue holds, waiting up to wait for
// at least want (an abandoned send lands when its answer is due).
func queued(t testing.TB, c *sqs.Client, queueURL string, want int, wait time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		out, err := c.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
			QueueUrl: aws.String(queueURL), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages},
		})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		fmt.Sscan(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)], &n)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A slow but working queue: an answer that takes 1.5 s is a 200 within the
// receiver's budget; one that takes longer than the budget is a 503 whose
// event was queued all the same, and sending it again (as after a 503,
// with the same deduplication id) adds nothing.
func TestPublishSlowQueueMoto(t *testing.T) {
	for _, tc := range []struct {
		name    string
		delay   time.Duration
		wantErr bool
	}{
		{"1.5 s answer: queued", 1500 * time.Millisecond, false},
		{"3.5 s answer: 503, queued all the same, resend dropped", 3500 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slow, direct, q := slowQueue(t, func() time.Duration { return tc.delay })
			ctx, cancel := context.WithTimeout(t.Context(), receiverBudget)
			defer cancel()
			_, err := NewSQSPublisher(slow, q).Publish(ctx, testMsg)
			if gotErr := err != nil; gotErr != tc.wantErr || (err != nil && !errors.Is(err, ErrUnavailable)) {
				t.Fatalf("Publish through a %s queue: %v, want error=%v", tc.delay, err, tc.wantErr)
			}
			if n := queued(t, direct, q, 1, tc.delay+time.Second); n != 1 {
				t.Fatalf("queue holds %d messages, want the 1 sent", n)
			}
			if !tc.wantErr {
				return
			}
			if _, err := NewSQSPublisher(direct, q).Publish(t.Context(), testMsg); err != nil {
				t.Fatalf("resend: %v", err)
			}
			if n := queued(t, direct, q, 2, 0); n != 1 {
				t.Errorf("after the resend the queue holds %d messages, want 1: the deduplication id must drop it", n)
			}
		})
	}
}

// BenchmarkPublishSlowQueue measures what the receiver answers when every
// SendMessage answer is held back 1–4 s (uniformly), with the receiver's
// 2.8 s budget, under the retry policy of today (an attempt may take the
// whole budget) and that of before (1 s attempts in a 2.5 s budget);
// "direct" is moto unhindered, the baseline latency. Run it with
//
//	go test -run '^$' -bench PublishSlowQueue -benchtime 60x ./internal/queue
//
// ok_% is webhooks answered 200; lost_200_% those answered 503 although the
// event was queued (a resend is dropped by its deduplication id);
// not_queued_% those neither answered 200 nor queued.
func BenchmarkPublishSlowQueue(b *testing.B) {
	for _, bc := range []struct {
		name               string
		delay              func(*rand.Rand) time.Duration
		budget, attemptCap time.Duration
	}{
		{"direct", func(*rand.Rand) time.Duration { return 0 }, publishBudget, 0},
		{"delay=1-4s/attempt=rest-of-budget", uniform1to4, publishBudget, 0},
		{"delay=1-4s/attempt=1s-before", uniform1to4, 2500 * time.Millisecond, time.Second},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var rmu sync.Mutex
			rng := rand.New(rand.NewPCG(1, 2))
			slow, direct, q := slowQueue(b, func() time.Duration { rmu.Lock(); defer rmu.Unlock(); return bc.delay(rng) })
			p := NewSQSPublisher(slow, q)
			p.budget, p.attemptCap = bc.budget, bc.attemptCap
			type result struct {
				dedup string
				took  time.Duration
				ok    bool
			}
			results := make([]result, b.N)
			next := make(chan int)
			var wg sync.WaitGroup
			b.ResetTimer()
			for range 10 { // concurrent webhooks, as the function URL runs them
				wg.Go(func() {
					for i := range next {
						m := testMsg
						m.DedupID = fmt.Sprintf("bench-%d", i)
						ctx, cancel := context.WithTimeout(context.Background(), receiverBudget)
						start := time.Now()
						_, err := p.Publish(ctx, m)
						results[i] = result{m.DedupID, time.Since(start), err == nil}
						cancel()
					}
				})
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			b.StopTimer()

			time.Sleep(4 * time.Second) // abandoned sends land when their answers are due
			landed := map[string]bool{}
			for _, m := range moto.Drain(b, direct, q) {
				landed[m.Attributes[string(types.MessageSystemAttributeNameMessageDeduplicationId)]] = true
			}
			var oks, lost, notQueued int
			var took []float64
			for _, r := range results {
				took = append(took, r.took.Seconds())
				switch {
				case r.ok:
					oks++
				case landed[r.dedup]:
					lost++
				default:
					notQueued++
				}
			}
			slices.Sort(took)
			pct := func(n int) float64 { return 100 * float64(n) / float64(b.N) }
			b.ReportMetric(pct(oks), "ok_%")
			b.ReportMetric(pct(lost), "lost_200_%")
			b.ReportMetric(pct(notQueued), "not_queued_%")
			b.ReportMetric(took[len(took)/2], "p50_s")
			b.ReportMetric(took[len(took)-1], "max_s")
		})
	}
}

func uniform1to4(r *rand.Rand) time.Duration {
	return time.Second + time.Duration(r.Int64N(int64(3*time.Second)))
}
