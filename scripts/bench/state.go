package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

// stateWebhooks caps the webhooks of the state run: moto answers each
// DynamoDB call in milliseconds, and the figure is a count, not a time.
const stateWebhooks = 1000

// callCounter is a reverse proxy to moto that counts the DynamoDB calls
// passing through it, by operation (the X-Amz-Target of the JSON protocol).
type callCounter struct {
	mu  sync.Mutex
	ops map[string]int
	srv *httptest.Server
}

func newCallCounter(target string) (*callCounter, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	c := &callCounter{ops: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
		c.mu.Lock()
		c.ops[op]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	return c, nil
}

func (c *callCounter) counts() (total int, byOp string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(c.ops)) {
		total += c.ops[op]
		parts = append(parts, fmt.Sprintf("%s %d", op, c.ops[op]))
	}
	return total, strings.Join(parts, ", ")
}

// stateCalls runs the end-to-end workload with the incident state in
// DynamoDB on moto and counts the DynamoDB calls per delivered event
// (DESIGN §8 state_calls_per_event).
func stateCalls(ctx context.Context, root string, m *motoServer, o options, res *Results) error {
	const table = "bench-incidents"
	ddb := dynamodb.New(dynamodb.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(m.URL),
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", ""),
	})
	if err := dynamo.CreateTable(ctx, ddb, table); err != nil {
		return fmt.Errorf("state_calls_per_event: moto: %w", err)
	}
	counter, err := newCallCounter(m.URL)
	if err != nil {
		return err
	}
	defer counter.srv.Close()
	// The stack builds its DynamoDB client from the process environment, as
	// make dev does.
	restore := setenv(map[string]string{
		"AWS_ENDPOINT_URL_DYNAMODB": counter.srv.URL, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	})
	defer restore()
	o.webhooks = min(o.webhooks, stateWebhooks)
	r, err := runE2E(ctx, root, o, map[string]string{"STATE_TABLE": table})
	if err != nil {
		return fmt.Errorf("state_calls_per_event: %w", err)
	}
	total, byOp := counter.counts()
	res.set("state_calls_per_event", float64(total)/float64(o.webhooks))
	res.note("state_calls_per_event: %d webhooks (%d incidents) end to end with STATE_TABLE on moto, every one delivered (%d SQIBS calls): %d DynamoDB calls (%s), counted by a proxy in front of moto; the floor is one read and one conditional write per event, and each incident's first event also reads its alias and, opening it, writes the alias",
		o.webhooks, groups, r.sqibsCalls, total, byOp)
	return nil
}

// setenv sets variables and returns what puts them back.
func setenv(vars map[string]string) (restore func()) {
	type old struct {
		v  string
		ok bool
	}
	saved := map[string]old{}
	for k, v := range vars {
		prev, ok := os.LookupEnv(k)
		saved[k] = old{prev, ok}
		os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}
