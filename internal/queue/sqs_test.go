package queue

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

const testQueueURL = "https://sqs.us-east-1.amazonaws.com/123456789012/bridge.fifo"

// fakeSQS answers SendMessage from a script: call i gets step i, the last
// step repeats.
type fakeSQS struct {
	mu    sync.Mutex
	steps []func(ctx context.Context) (*sqs.SendMessageOutput, error)
	calls []*sqs.SendMessageInput
}

func (f *fakeSQS) SendMessage(ctx context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	f.mu.Lock()
	i := len(f.calls)
	f.calls = append(f.calls, in)
	step := f.steps[min(i, len(f.steps)-1)]
	f.mu.Unlock()
	return step(ctx)
}

func (f *fakeSQS) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func ok(id string) func(context.Context) (*sqs.SendMessageOutput, error) {
	return func(context.Context) (*sqs.SendMessageOutput, error) {
		return &sqs.SendMessageOutput{MessageId: aws.String(id)}, nil
	}
}

func fails(err error) func(context.Context) (*sqs.SendMessageOutput, error) {
	return func(context.Context) (*sqs.SendMessageOutput, error) { return nil, err }
}

// hangs until the attempt's context ends, the way the SDK reports it.
func hangs(ctx context.Context) (*sqs.SendMessageOutput, error) {
	<-ctx.Done()
	return nil, sdkErr(&smithy.CanceledError{Err: ctx.Err()})
}

// sdkErr wraps err as the SDK's SendMessage does.
func sdkErr(err error) error {
	return &smithy.OperationError{ServiceID: "SQS", OperationName: "SendMessage", Err: err}
}

// apiErr is a service error response as the SDK returns it.
func apiErr(status int, e error) error {
	return sdkErr(&awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      e,
		},
		RequestID: "00000000-0000-0000-0000-000000000000",
	})
}

var (
	errThrottled  = apiErr(400, &types.RequestThrottled{Message: aws.String("Rate exceeded")})
	errKMSThrottl = apiErr(400, &types.KmsThrottled{Message: aws.String("KMS throttled")})
	errInternal   = apiErr(500, &smithy.GenericAPIError{Code: "InternalError", Message: "oops", Fault: smithy.FaultServer})
	errUnavail503 = apiErr(503, &smithy.GenericAPIError{Code: "ServiceUnavailable", Message: "try later"})
	errTooMany429 = apiErr(429, &smithy.GenericAPIError{Code: "Unknown", Message: "slow down"})
	errInvalid    = apiErr(400, &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Value for parameter MessageGroupId is invalid", Fault: smithy.FaultClient})
	errDenied     = apiErr(403, &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized", Fault: smithy.FaultClient})
	errNoQueue    = apiErr(400, &types.QueueDoesNotExist{Message: aws.String("The specified queue does not exist.")})
	errKMSDenied  = apiErr(400, &types.KmsAccessDenied{Message: aws.String("denied")})
	errRefused    = sdkErr(&smithyhttp.RequestSendError{Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}})
	errReset      = sdkErr(&smithyhttp.RequestSendError{Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}})
	errNoSuchHost = sdkErr(&smithyhttp.RequestSendError{Err: &net.DNSError{Err: "no such host", Name: "sqs.invalid", IsNotFound: true}})
	errValidation = sdkErr(&smithy.InvalidParamsError{Context: "SendMessageInput"})
)

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"RequestThrottled", errThrottled, true},
		{"KmsThrottled", errKMSThrottl, true},
		{"500 InternalError", errInternal, true},
		{"503 without fault", errUnavail503, true},
		{"unmodelled 429", errTooMany429, true},
		{"connection refused", errRefused, true},
		{"connection reset", errReset, true},
		{"InvalidParameterValue", errInvalid, false},
		{"AccessDenied", errDenied, false},
		{"QueueDoesNotExist", errNoQueue, false},
		{"KmsAccessDenied", errKMSDenied, false},
		{"NXDOMAIN", errNoSuchHost, false},
		{"client-side validation", errValidation, false},
		{"caller cancelled", sdkErr(&smithy.CanceledError{Err: context.Canceled}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryable(tc.err); got != tc.want {
				t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// newTestPublisher has production limits but records back-offs instead of
// sleeping, so tests count attempts rather than wait.
func newTestPublisher(api SQSAPI) (*SQSPublisher, *[]time.Duration) {
	p := NewSQSPublisher(api, testQueueURL)
	var slept []time.Duration
	var mu sync.Mutex
	p.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		slept = append(slept, d)
		mu.Unlock()
		return ctx.Err()
	}
	return p, &slept
}

var testMsg = Message{
	Body:    []byte(`{"v":1,"event":"build.finished","payload":{"build":{"message":"SECRET-BODY-TEXT"}}}`),
	GroupID: "acme/deploy-api/main",
	DedupID: strings.Repeat("ab", 32),
}

func TestPublishRetriesTransientThenSucceeds(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"throttled", errThrottled},
		{"5xx", errInternal},
		{"network", errRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){fails(tc.err), fails(tc.err), ok("msg-1")}}
			p, slept := newTestPublisher(f)
			id, err := p.Publish(t.Context(), testMsg)
			if err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if id != "msg-1" {
				t.Errorf("id = %q, want msg-1", id)
			}
			if f.n() != 3 {
				t.Errorf("SendMessage calls = %d, want 3", f.n())
			}
			if len(*slept) != 2 {
				t.Errorf("back-offs = %v, want 2", *slept)
			}
			for i, in := range f.calls {
				if aws.ToString(in.QueueUrl) != testQueueURL ||
					aws.ToString(in.MessageBody) != string(testMsg.Body) ||
					aws.ToString(in.MessageGroupId) != testMsg.GroupID ||
					aws.ToString(in.MessageDeduplicationId) != testMsg.DedupID {
					t.Errorf("call %d input = url %q body %q group %q dedup %q", i,
						aws.ToString(in.QueueUrl), aws.ToString(in.MessageBody),
						aws.ToString(in.MessageGroupId), aws.ToString(in.MessageDeduplicationId))
				}
			}
		})
	}
}

func TestPublishPermanentErrorIsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"InvalidParameterValue", errInvalid},
		{"AccessDenied", errDenied},
		{"QueueDoesNotExist", errNoQueue},
		{"KmsAccessDenied", errKMSDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){fails(tc.err), ok("never")}}
			p, _ := newTestPublisher(f)
			_, err := p.Publish(t.Context(), testMsg)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("err = %v, want it to wrap the SDK error", err)
			}
			if f.n() != 1 {
				t.Errorf("SendMessage calls = %d, want 1", f.n())
			}
			if msg := err.Error(); strings.Contains(msg, "SECRET-BODY-TEXT") || !strings.Contains(msg, testQueueURL) {
				t.Errorf("error %q: want the queue URL and never the message body", msg)
			}
		})
	}
}

func TestPublishGivesUpAfterBoundedAttempts(t *testing.T) {
	f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){fails(errRefused)}}
	p, slept := newTestPublisher(f)
	_, err := p.Publish(t.Context(), testMsg)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errRefused) {
		t.Fatalf("err = %v, want ErrUnavailable wrapping the network error", err)
	}
	if f.n() != maxAttempts {
		t.Errorf("SendMessage calls = %d, want %d", f.n(), maxAttempts)
	}
	// Back-offs ~50, ~100, ~200 ms with ±25% jitter; with the worst-case
	// attempt time they stay inside the 3 s the receiver may spend.
	var total time.Duration
	for i, d := range *slept {
		want := baseBackoff << i
		if d < want*3/4 || d >= want*5/4 {
			t.Errorf("back-off %d = %v, want %v ±25%%", i+1, d, want)
		}
		total += d
	}
	if len(*slept) != maxAttempts-1 {
		t.Errorf("back-offs = %v, want %d", *slept, maxAttempts-1)
	}
	if total >= publishBudget {
		t.Errorf("back-offs sum to %v, more than the %v budget", total, publishBudget)
	}
}

// A slow attempt is given the whole budget, not abandoned early: a
// SendMessage that takes seconds may still land, and cutting it short would
// answer 503 for a queued event. One that outlives the budget is not retried.
func TestPublishSlowAttemptGetsTheBudget(t *testing.T) {
	var deadlines []time.Duration
	f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){
		func(ctx context.Context) (*sqs.SendMessageOutput, error) {
			dl, ok := ctx.Deadline()
			if !ok {
				t.Error("attempt context has no deadline")
			}
			deadlines = append(deadlines, time.Until(dl))
			return hangs(ctx)
		},
	}}
	p, _ := newTestPublisher(f)
	p.budget = 200 * time.Millisecond
	_, err := p.Publish(t.Context(), testMsg)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable wrapping a deadline", err)
	}
	if f.n() != 1 {
		t.Errorf("SendMessage calls = %d, want 1: an attempt that used the budget leaves nothing to retry with", f.n())
	}
	if len(deadlines) == 1 && (deadlines[0] > 200*time.Millisecond || deadlines[0] < 150*time.Millisecond) {
		t.Errorf("attempt deadline in %v, want the whole 200ms budget", deadlines[0])
	}
}

// A fast failure is retried only while enough of the budget is left for an
// attempt to succeed.
func TestPublishRetriesOnlyWithTimeLeft(t *testing.T) {
	for _, tc := range []struct {
		name      string
		takes     time.Duration // each failing attempt
		wantCalls int
	}{
		{"fast failures: every attempt", 0, maxAttempts},
		{"slow failure: no time left to retry", 900 * time.Millisecond, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){
				func(ctx context.Context) (*sqs.SendMessageOutput, error) {
					time.Sleep(tc.takes)
					return nil, errInternal
				},
			}}
			p, _ := newTestPublisher(f)
			p.budget, p.minAttempt = time.Second, 100*time.Millisecond
			if _, err := p.Publish(t.Context(), testMsg); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if f.n() != tc.wantCalls {
				t.Errorf("SendMessage calls = %d, want %d", f.n(), tc.wantCalls)
			}
		})
	}
}

func TestPublishCancelledContext(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){ok("never")}}
		p, _ := newTestPublisher(f)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := p.Publish(ctx, testMsg)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want ErrUnavailable wrapping context.Canceled", err)
		}
		if f.n() != 0 {
			t.Errorf("SendMessage calls = %d, want 0", f.n())
		}
	})
	t.Run("during", func(t *testing.T) {
		// A caller that gives up is not retried for, even on a transient error.
		ctx, cancel := context.WithCancel(t.Context())
		f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){
			func(context.Context) (*sqs.SendMessageOutput, error) { cancel(); return nil, errThrottled },
		}}
		p, _ := newTestPublisher(f)
		_, err := p.Publish(ctx, testMsg)
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
		if f.n() != 1 {
			t.Errorf("SendMessage calls = %d, want 1", f.n())
		}
	})
}

func TestPublishSanitisesIDs(t *testing.T) {
	f := &fakeSQS{steps: []func(context.Context) (*sqs.SendMessageOutput, error){ok("m")}}
	p, _ := newTestPublisher(f)
	m := testMsg
	m.GroupID = "acme/deploy-api/feature/ünïcode branch"
	m.DedupID = ""
	if _, err := p.Publish(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	in := f.calls[0]
	if got, want := aws.ToString(in.MessageGroupId), SafeFIFOID(m.GroupID); got != want || got == m.GroupID {
		t.Errorf("MessageGroupId = %q, want the safe form %q", got, want)
	}
	if in.MessageDeduplicationId != nil {
		t.Errorf("MessageDeduplicationId = %q, want it left out when empty", *in.MessageDeduplicationId)
	}
}

func TestSafeFIFOID(t *testing.T) {
	const punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
	long128 := "acme/" + strings.Repeat("p", 123)
	long129 := long128 + "x"
	for _, tc := range []struct {
		name, in   string
		verbatim   bool
		wantPrefix string // for rewritten ids
	}{
		{"build incident", "acme/deploy-api/main", true, ""},
		{"job incident", "acme/deploy-api/feature/x#test", true, ""},
		{"all punctuation", "aZ09" + punct, true, ""},
		{"exactly 128", long128, true, ""},
		{"129 characters", long129, false, long128[:111]},
		{"space", "acme/deploy-api/my branch", false, "acme/deploy-api/my_branch"},
		{"unicode", "acme/deploy-api/fïx", false, "acme/deploy-api/f_x"},
		{"control character", "acme/a\tb", false, "acme/a_b"},
		{"invalid UTF-8", "acme/\xff\xfe", false, "acme/__"},
		{"empty", "", false, ""},
		{"long and unicode", strings.Repeat("é", 200), false, strings.Repeat("_", 111)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SafeFIFOID(tc.in)
			if got != SafeFIFOID(tc.in) {
				t.Fatal("not deterministic")
			}
			if len(got) < 1 || len(got) > 128 || !fifoSafe(got) {
				t.Fatalf("SafeFIFOID(%q) = %q: not 1..128 printable ASCII characters", tc.in, got)
			}
			if tc.verbatim {
				if got != tc.in {
					t.Errorf("SafeFIFOID(%q) = %q, want it unchanged", tc.in, got)
				}
				return
			}
			i := strings.LastIndexByte(got, '~')
			if i < 0 {
				t.Fatalf("SafeFIFOID(%q) = %q, want prefix %q then ~hash", tc.in, got, tc.wantPrefix)
			}
			prefix, hash := got[:i], got[i+1:]
			if prefix != tc.wantPrefix {
				t.Errorf("SafeFIFOID(%q) = %q, want prefix %q then ~hash", tc.in, got, tc.wantPrefix)
			}
			if _, err := hex.DecodeString(hash); err != nil || len(hash) != 16 {
				t.Errorf("SafeFIFOID(%q) = %q: suffix %q is not 16 hex digits", tc.in, got, hash)
			}
		})
	}

	// Ids that share their readable prefix still get distinct groups.
	a := strings.Repeat("x", 200) + "/a"
	b := strings.Repeat("x", 200) + "/b"
	if SafeFIFOID(a) == SafeFIFOID(b) {
		t.Error("two long ids differing only at the end share a group id")
	}
	if SafeFIFOID("acme/p/my branch") == SafeFIFOID("acme/p/my\tbranch") {
		t.Error("ids differing only in a replaced character share a group id")
	}
}

// countingSQS counts SendMessage calls made to a real client.
type countingSQS struct {
	api   SQSAPI
	calls atomic.Int32
}

func (c *countingSQS) SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	c.calls.Add(1)
	return c.api.SendMessage(ctx, in, optFns...)
}

// TestPublishRealClientHTTP runs the SDK's own serialisation and error
// parsing against an HTTP server: it checks that the real errors are
// classified as the fakes above assume, and that SQSOptions leaves exactly
// one HTTP request per attempt (the SDK's default retryer would make three).
func TestPublishRealClientHTTP(t *testing.T) {
	for _, tc := range []struct {
		name         string
		status       int
		body         string
		wantRequests int32
	}{
		{"500 retried", 500, `{"__type":"com.amazonaws.sqs#InternalError","message":"boom"}`, maxAttempts},
		{"throttled retried", 400, `{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}`, maxAttempts},
		{"missing queue not retried", 400, `{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}`, 1},
		{"access denied not retried", 400, `{"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				if got := r.Header.Get("X-Amz-Target"); got != "AmazonSQS.SendMessage" {
					t.Errorf("X-Amz-Target = %q", got)
				}
				w.Header().Set("Content-Type", "application/x-amz-json-1.0")
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			client := sqs.NewFromConfig(aws.Config{
				Region:      "us-east-1",
				Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
			}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(srv.URL) }, SQSOptions)
			c := &countingSQS{api: client}
			p, _ := newTestPublisher(c)
			_, err := p.Publish(t.Context(), testMsg)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if got := c.calls.Load(); got != tc.wantRequests {
				t.Errorf("attempts = %d, want %d", got, tc.wantRequests)
			}
			if got := requests.Load(); got != c.calls.Load() {
				t.Errorf("HTTP requests = %d for %d attempts: the SDK retried underneath", got, c.calls.Load())
			}
		})
	}
}

func motoQueue(t *testing.T) (*sqs.Client, *moto.Server, string) {
	t.Helper()
	s := moto.Start(t)
	client := sqs.NewFromConfig(s.AWSConfig(t), SQSOptions)
	out, err := client.CreateQueue(t.Context(), &sqs.CreateQueueInput{
		QueueName: aws.String("x.fifo"),
		Attributes: map[string]string{
			string(types.QueueAttributeNameFifoQueue):                 "true",
			string(types.QueueAttributeNameContentBasedDeduplication): "false",
		},
	})
	if err != nil {
		t.Fatalf("create queue: %v", err)
	}
	return client, s, aws.ToString(out.QueueUrl)
}

func TestPublishMotoFIFO(t *testing.T) {
	client, _, url := motoQueue(t)
	p := NewSQSPublisher(client, url)
	ctx := t.Context()
	received := time.Date(2024, 8, 5, 12, 0, 1, 0, time.UTC)

	build := loadPayload(t, "build_finished_failed.json")
	first, err := NewMessage(build, "acme/deploy-api/main", "req-1", received)
	if err != nil {
		t.Fatal(err)
	}
	// The same event delivered again: another request id, so another body,
	// but the same identity. SQS must drop it by MessageDeduplicationId.
	again, err := NewMessage(build, "acme/deploy-api/main", "req-2", received.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if again.DedupID != first.DedupID || string(again.Body) == string(first.Body) {
		t.Fatal("test setup: want equal DedupIDs and different bodies")
	}
	job := loadPayload(t, "job_finished_failed.json")
	unsafeGroup := "acme/deploy-api/feature/ünï code#test"
	third, err := NewMessage(job, unsafeGroup, "req-3", received)
	if err != nil {
		t.Fatal(err)
	}

	ids := map[string]bool{}
	for _, m := range []Message{first, again, third} {
		id, err := p.Publish(ctx, m)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if id == "" {
			t.Fatal("Publish returned an empty message id")
		}
		ids[id] = true
	}

	got := map[string]types.Message{} // by group id
	for range 5 {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(url),
			MaxNumberOfMessages:         10,
			VisibilityTimeout:           60,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		if err != nil {
			t.Fatalf("ReceiveMessage: %v", err)
		}
		if len(out.Messages) == 0 {
			break
		}
		for _, msg := range out.Messages {
			g := msg.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
			if _, dup := got[g]; dup {
				t.Errorf("group %q delivered twice: deduplication failed", g)
			}
			got[g] = msg
		}
	}
	if len(got) != 2 {
		t.Fatalf("received %d messages, want 2 (the duplicate dropped)", len(got))
	}
	for _, want := range []struct {
		m     Message
		group string
	}{{first, "acme/deploy-api/main"}, {third, SafeFIFOID(unsafeGroup)}} {
		msg, found := got[want.group]
		if !found {
			t.Errorf("no message in group %q; groups: %v", want.group, keysOf(got))
			continue
		}
		if b := aws.ToString(msg.Body); b != string(want.m.Body) {
			t.Errorf("group %q body = %s, want %s", want.group, b, want.m.Body)
		}
		if d := msg.Attributes[string(types.MessageSystemAttributeNameMessageDeduplicationId)]; d != want.m.DedupID {
			t.Errorf("group %q MessageDeduplicationId = %q, want %q", want.group, d, want.m.DedupID)
		}
		if !ids[aws.ToString(msg.MessageId)] {
			t.Errorf("received message id %q was not returned by Publish (%v)", aws.ToString(msg.MessageId), ids)
		}
		if _, err := Decode([]byte(aws.ToString(msg.Body))); err != nil {
			t.Errorf("received body does not decode: %v", err)
		}
	}
}

func TestPublishMotoMissingQueue(t *testing.T) {
	client, s, _ := motoQueue(t)
	c := &countingSQS{api: client}
	p := NewSQSPublisher(c, s.URL+"/123456789012/missing.fifo")
	_, err := p.Publish(t.Context(), testMsg)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if n := c.calls.Load(); n != 1 {
		t.Errorf("SendMessage calls = %d, want 1: a missing queue is not retried (err: %v)", n, err)
	}
	var missing *types.QueueDoesNotExist
	if !errors.As(err, &missing) {
		t.Errorf("err = %v, want it to wrap QueueDoesNotExist", err)
	}
}

func keysOf[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
