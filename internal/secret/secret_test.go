package secret

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

const (
	testID    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sqibs-token-AbCdEf"
	testValue = "tok-VERY-SECRET-9f3a" // must never show up in errors or logs
)

// step is one scripted answer of fakeSM.
type step func(ctx context.Context) (*secretsmanager.GetSecretValueOutput, error)

// fakeSM answers GetSecretValue from a script: call i gets step i, the last
// step repeats.
type fakeSM struct {
	mu    sync.Mutex
	steps []step
	ids   []string
}

func (f *fakeSM) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	f.mu.Lock()
	i := len(f.ids)
	f.ids = append(f.ids, aws.ToString(in.SecretId))
	st := f.steps[min(i, len(f.steps)-1)]
	f.mu.Unlock()
	return st(ctx)
}

func (f *fakeSM) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ids)
}

func str(v string) step {
	return func(context.Context) (*secretsmanager.GetSecretValueOutput, error) {
		return &secretsmanager.GetSecretValueOutput{SecretString: aws.String(v)}, nil
	}
}

func fail(err error) step {
	return func(context.Context) (*secretsmanager.GetSecretValueOutput, error) { return nil, err }
}

// hang blocks until release closes (then answers v) or ctx ends.
func hang(release <-chan struct{}, entered chan<- struct{}, v string) step {
	return func(ctx context.Context) (*secretsmanager.GetSecretValueOutput, error) {
		if entered != nil {
			entered <- struct{}{}
		}
		select {
		case <-release:
			return str(v)(ctx)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

var (
	errNotFound = &types.ResourceNotFoundException{Message: aws.String("Secrets Manager can't find the specified secret.")}
	errDenied   = &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not allowed"}
)

func newSource(t *testing.T, ttl time.Duration, steps ...step) (*Source, *fakeSM, *testkit.Clock) {
	t.Helper()
	f := &fakeSM{steps: steps}
	c := testkit.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	s := FromSecretsManager(f, testID, ttl)
	s.now = c.Now
	return s, f, c
}

// captureLog gives s a JSON logger writing to the returned buffer, as the
// functions do (WithLogger), and fails the test if anything reaches
// slog.Default instead: in Lambda that would be a plain-text line.
func captureLog(t *testing.T, s *Source) *bytes.Buffer {
	t.Helper()
	var buf, stray bytes.Buffer
	WithLogger(slog.New(slog.NewJSONHandler(&buf, nil)))(s)
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&stray, nil)))
	t.Cleanup(func() {
		slog.SetDefault(old)
		if stray.Len() > 0 {
			t.Errorf("logged through slog.Default, not the Source's logger:\n%s", stray.String())
		}
	})
	return &buf
}

func mustGet(t *testing.T, s *Source, want string) {
	t.Helper()
	got, err := s.Get(context.Background())
	if err != nil || got != want {
		t.Fatalf("Get = %q, %v; want %q, nil", got, err, want)
	}
}

func wantUnavailable(t *testing.T, err error, class string) {
	t.Helper()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v; want it to wrap ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), testID) || !strings.Contains(err.Error(), "("+class+")") {
		t.Fatalf("err = %q; want the secret id and class %q in it", err, class)
	}
}

func TestLiteral(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tok", "tok"},
		{"", ""},
		{"tok\n", "tok"},
		{" tok \r\n", "tok"},
		{"old\nnew\n", "old\nnew"},
	} {
		s := Literal(tc.in)
		for _, f := range []func(context.Context) (string, error){s.Get, s.Refresh} {
			got, err := f(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("Literal(%q) = %q, %v; want %q, nil", tc.in, got, err, tc.want)
			}
		}
		if s.Name() != "env" {
			t.Errorf("Name = %q; want env", s.Name())
		}
	}
}

func TestTTLReusesValue(t *testing.T) {
	ttl := time.Minute
	s, f, c := newSource(t, ttl, str("v1"), str("v2"))

	for range 3 {
		mustGet(t, s, "v1")
	}
	c.Advance(ttl - time.Nanosecond)
	mustGet(t, s, "v1")
	if n := f.calls(); n != 1 {
		t.Fatalf("fetches within TTL = %d; want 1", n)
	}
	c.Advance(time.Nanosecond)
	mustGet(t, s, "v2")
	mustGet(t, s, "v2")
	if n := f.calls(); n != 2 {
		t.Fatalf("fetches after expiry = %d; want 2", n)
	}
	if f.ids[0] != testID {
		t.Fatalf("SecretId = %q; want %q", f.ids[0], testID)
	}
}

func TestDefaultTTL(t *testing.T) {
	s, f, c := newSource(t, 0, str("v1"), str("v2"))
	mustGet(t, s, "v1")
	c.Advance(DefaultTTL - time.Second)
	mustGet(t, s, "v1")
	c.Advance(time.Second)
	mustGet(t, s, "v2")
	if n := f.calls(); n != 2 {
		t.Fatalf("fetches = %d; want 2", n)
	}
}

func TestValueShape(t *testing.T) {
	for _, tc := range []struct {
		name  string
		out   *secretsmanager.GetSecretValueOutput
		want  string
		class string // "" = success
	}{
		{"plain", &secretsmanager.GetSecretValueOutput{SecretString: aws.String("tok")}, "tok", ""},
		{"trailing newline", &secretsmanager.GetSecretValueOutput{SecretString: aws.String("tok\n")}, "tok", ""},
		{"crlf and blanks", &secretsmanager.GetSecretValueOutput{SecretString: aws.String("  tok \r\n")}, "tok", ""},
		{"two tokens", &secretsmanager.GetSecretValueOutput{SecretString: aws.String("old\nnew\n")}, "old\nnew", ""},
		{"empty", &secretsmanager.GetSecretValueOutput{SecretString: aws.String("")}, "", "EmptySecret"},
		{"blank", &secretsmanager.GetSecretValueOutput{SecretString: aws.String(" \n")}, "", "EmptySecret"},
		{"binary only", &secretsmanager.GetSecretValueOutput{SecretBinary: []byte{1, 2}}, "", "NotAString"},
		{"nothing", &secretsmanager.GetSecretValueOutput{}, "", "EmptySecret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := tc.out
			s, _, _ := newSource(t, time.Minute, func(context.Context) (*secretsmanager.GetSecretValueOutput, error) { return out, nil })
			got, err := s.Get(context.Background())
			if tc.class == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Get = %q, %v; want %q, nil", got, err, tc.want)
				}
				return
			}
			if got != "" {
				t.Fatalf("Get = %q; want \"\" with the error", got)
			}
			wantUnavailable(t, err, tc.class)
		})
	}
}

func TestFirstFailureIsUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		class string
	}{
		{"not found", errNotFound, "ResourceNotFoundException"},
		{"denied", errDenied, "AccessDeniedException"},
		{"timeout", context.DeadlineExceeded, "Timeout"},
		{"other", errors.New("boom"), "Unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, f, _ := newSource(t, time.Minute, fail(tc.err), str("v1"))
			_, err := s.Get(context.Background())
			wantUnavailable(t, err, tc.class)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v; want it to wrap %v", err, tc.err)
			}
			// With no value to fall back on, there is no back-off: the next
			// call tries again at once.
			mustGet(t, s, "v1")
			if n := f.calls(); n != 2 {
				t.Fatalf("fetches = %d; want 2", n)
			}
		})
	}
}

func TestFailedRefreshKeepsLastGood(t *testing.T) {
	for _, tc := range []struct {
		ttl, backoff time.Duration
	}{
		{5 * time.Minute, 30 * time.Second},  // capped
		{10 * time.Second, 10 * time.Second}, // never longer than the TTL
	} {
		t.Run(tc.ttl.String(), func(t *testing.T) {
			s, f, c := newSource(t, tc.ttl, str(testValue), fail(errDenied), str("v2"))
			logs := captureLog(t, s)
			mustGet(t, s, testValue)

			c.Advance(tc.ttl)
			mustGet(t, s, testValue) // the refresh fails; last good value served
			if n := f.calls(); n != 2 {
				t.Fatalf("fetches = %d; want 2", n)
			}
			c.Advance(tc.backoff - time.Nanosecond)
			mustGet(t, s, testValue) // backing off: no new attempt
			if n := f.calls(); n != 2 {
				t.Fatalf("fetches during back-off = %d; want 2", n)
			}
			c.Advance(time.Nanosecond)
			mustGet(t, s, "v2")
			if n := f.calls(); n != 3 {
				t.Fatalf("fetches after back-off = %d; want 3", n)
			}

			out := logs.String()
			if strings.Contains(out, testValue) {
				t.Fatalf("log holds the secret value: %s", out)
			}
			if n := strings.Count(out, `"level":"WARN"`); n != 1 {
				t.Fatalf("warnings = %d; want 1 for the one failed refresh:\n%s", n, out)
			}
			for _, want := range []string{testID, "AccessDeniedException"} {
				if !strings.Contains(out, want) {
					t.Fatalf("log lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	s, f, _ := newSource(t, time.Hour, str("v1"), str("v2"), fail(errNotFound))
	captureLog(t, s)
	mustGet(t, s, "v1")

	got, err := s.Refresh(context.Background())
	if err != nil || got != "v2" {
		t.Fatalf("Refresh = %q, %v; want v2, nil", got, err)
	}
	mustGet(t, s, "v2") // the refreshed value is cached
	if n := f.calls(); n != 2 {
		t.Fatalf("fetches = %d; want 2", n)
	}

	// A failed Refresh says so (the caller must not retry with the same
	// token), while Get keeps serving the last good value.
	got, err = s.Refresh(context.Background())
	if got != "" {
		t.Fatalf("failed Refresh returned %q; want \"\"", got)
	}
	wantUnavailable(t, err, "ResourceNotFoundException")
	mustGet(t, s, "v2")
	if n := f.calls(); n != 3 {
		t.Fatalf("fetches = %d; want 3", n)
	}
	// Refresh ignores the back-off the failure started.
	if _, err := s.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh succeeded; the script says it fails")
	}
	if n := f.calls(); n != 4 {
		t.Fatalf("fetches = %d; want 4", n)
	}
}

// waitJoined waits until n more callers share the fetch in flight. The
// deadline only turns a broken single-flight into a failure, not a hang.
func waitJoined(t *testing.T, s *Source, n int) {
	t.Helper()
	j := -1
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.mu.Lock()
		j = -1
		if s.inflight != nil {
			j = s.inflight.joined
		}
		s.mu.Unlock()
		if j >= n {
			return
		}
	}
	t.Fatalf("%d callers joined the fetch in flight; want %d (-1: none in flight)", j, n)
}

// waitIdle waits until no fetch is in flight.
func waitIdle(t *testing.T, s *Source) {
	t.Helper()
	for {
		s.mu.Lock()
		idle := s.inflight == nil
		s.mu.Unlock()
		if idle {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConcurrentGetFetchesOnce(t *testing.T) {
	for _, stale := range []bool{false, true} {
		t.Run(fmt.Sprintf("stale=%v", stale), func(t *testing.T) {
			const n = 50
			release := make(chan struct{})
			entered := make(chan struct{}, 1)
			steps := []step{hang(release, entered, "v2")}
			if stale {
				steps = []step{str("v1"), hang(release, entered, "v2")}
			}
			s, f, c := newSource(t, time.Minute, steps...)
			if stale {
				mustGet(t, s, "v1")
				c.Advance(time.Minute)
			}
			before := f.calls()

			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Go(func() {
					v, err := s.Get(context.Background())
					if err == nil && v != "v2" {
						err = fmt.Errorf("got %q; want v2", v)
					}
					if err != nil {
						errs <- err
					}
				})
			}
			<-entered
			waitJoined(t, s, n-1) // every other caller is waiting on the one fetch
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := f.calls() - before; got != 1 {
				t.Fatalf("fetches for %d concurrent Gets = %d; want 1", n, got)
			}
		})
	}
}

func TestContextCancellation(t *testing.T) {
	t.Run("cancelled before, no value", func(t *testing.T) {
		s, f, _ := newSource(t, time.Minute, str("v1"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := s.Get(ctx)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get = %v; want Canceled wrapped in ErrUnavailable", err)
		}
		if _, err := s.Refresh(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Refresh = %v; want Canceled", err)
		}
		if n := f.calls(); n != 0 {
			t.Fatalf("fetches = %d; want 0", n)
		}
	})

	t.Run("cancelled while waiting", func(t *testing.T) {
		release := make(chan struct{})
		entered := make(chan struct{}, 1)
		s, f, _ := newSource(t, time.Minute, hang(release, entered, "v1"))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := s.Get(ctx); done <- err }()
		<-entered
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get = %v; want Canceled wrapped in ErrUnavailable", err)
		}
		// The abandoned fetch was not cancelled with its first caller: a
		// later caller joins it and gets its value.
		got := make(chan string, 1)
		go func() { v, _ := s.Get(context.Background()); got <- v }()
		waitJoined(t, s, 1)
		close(release)
		if v := <-got; v != "v1" {
			t.Fatalf("second Get = %q; want v1", v)
		}
		if n := f.calls(); n != 1 {
			t.Fatalf("fetches = %d; want 1", n)
		}
	})

	t.Run("cancelled while refreshing a stale value", func(t *testing.T) {
		release := make(chan struct{})
		entered := make(chan struct{}, 1)
		s, _, c := newSource(t, time.Minute, str("v1"), hang(release, entered, "v2"))
		captureLog(t, s)
		mustGet(t, s, "v1")
		c.Advance(time.Minute)

		ctx, cancel := context.WithCancel(context.Background())
		type res struct {
			v   string
			err error
		}
		get, refresh := make(chan res, 1), make(chan res, 1)
		go func() { v, err := s.Get(ctx); get <- res{v, err} }()
		<-entered
		go func() { v, err := s.Refresh(ctx); refresh <- res{v, err} }()
		waitJoined(t, s, 1)
		cancel()
		if r := <-get; r.err != nil || r.v != "v1" {
			t.Fatalf("Get = %q, %v; want the last good value v1", r.v, r.err)
		}
		if r := <-refresh; !errors.Is(r.err, context.Canceled) || r.v != "" {
			t.Fatalf("Refresh = %q, %v; want \"\", Canceled", r.v, r.err)
		}
		// An already-cancelled ctx still gets the stale value, without a fetch.
		if v, err := s.Get(ctx); err != nil || v != "v1" {
			t.Fatalf("Get(cancelled) = %q, %v; want v1", v, err)
		}
		close(release)
		waitIdle(t, s)
		mustGet(t, s, "v2")
	})

	t.Run("hung endpoint bounded by fetch timeout", func(t *testing.T) {
		f := &fakeSM{steps: []step{hang(nil, nil, "never")}}
		s := FromSecretsManager(f, testID, time.Minute, WithFetchTimeout(10*time.Millisecond))
		_, err := s.Get(context.Background()) // no deadline of its own
		wantUnavailable(t, err, "Timeout")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v; want DeadlineExceeded", err)
		}
	})
}

func TestValueNeverLeaks(t *testing.T) {
	s, _, c := newSource(t, time.Minute, str(testValue+"\n"), fail(errDenied), fail(errNotFound))
	logs := captureLog(t, s)
	mustGet(t, s, testValue)
	c.Advance(time.Minute)
	mustGet(t, s, testValue)
	_, refreshErr := s.Refresh(context.Background())
	if refreshErr == nil {
		t.Fatal("Refresh succeeded; the script says it fails")
	}
	log := slog.New(slog.NewJSONHandler(logs, nil)) // the caller's logger, printing a Source
	log.Info("source", "src", s)

	lit := Literal(testValue)
	seen := []string{
		refreshErr.Error(), logs.String(),
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s),
		fmt.Sprint(lit), fmt.Sprintf("%v %+v %#v %s", lit, lit, lit, lit), lit.Name(), s.Name(),
	}
	for _, out := range seen {
		if strings.Contains(out, testValue) {
			t.Fatalf("secret value leaked into %q", out)
		}
	}
	if !strings.Contains(logs.String(), `"src":"`+testID+`"`) {
		t.Fatalf("slog of a Source should show its id:\n%s", logs)
	}
}
