// Package moto runs a moto_server (a local AWS API emulator) for tests.
//
// One server is started lazily per test binary and shared; each test gets a
// clean slate through POST /moto-api/reset. Tests that need it call Start and
// are skipped with a clear message when moto_server is not on PATH, unless
// REQUIRE_MOTO=1 (set by .ci/run), where a missing moto fails the test so a
// skip can never hide in a green CI run. Programs (make bench) that need a
// moto of their own use Launch, which needs no *testing.T.
package moto

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Server is a running moto_server.
type Server struct {
	URL  string // http://127.0.0.1:<port>
	proc *Process
}

var (
	mu     sync.Mutex
	shared *Server
)

// Start returns the shared server, reset to empty, and points the AWS SDK's
// environment (endpoints, region, fake credentials) at it for this test.
func Start(t testing.TB) *Server {
	t.Helper()
	s := start(t)
	s.Reset(t)
	t.Setenv("AWS_ENDPOINT_URL_SQS", s.URL)
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s.URL)
	t.Setenv("AWS_ENDPOINT_URL_DYNAMODB", s.URL)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	return s
}

func start(t testing.TB) *Server {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		return shared
	}
	var out io.Writer // moto's output is kept for start errors only, unless asked for
	if os.Getenv("MOTO_VERBOSE") != "" {
		out = os.Stderr
	}
	p, err := Launch(context.Background(), out)
	switch {
	case errors.Is(err, ErrAbsent) && os.Getenv("REQUIRE_MOTO") == "1":
		t.Fatalf("moto_server is not on PATH but REQUIRE_MOTO=1")
	case errors.Is(err, ErrAbsent):
		t.Skip("moto_server not on PATH: skipping test against the AWS emulator (pip install 'moto[server]' to run it)")
	case err != nil:
		t.Fatal(err)
	}
	shared = &Server{URL: p.URL, proc: p}
	return shared
}

// Reset empties every emulated service.
func (s *Server) Reset(t testing.TB) {
	t.Helper()
	resp, err := http.Post(s.URL+"/moto-api/reset", "application/json", strings.NewReader(""))
	if err != nil {
		t.Fatalf("moto: reset: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto: reset: status %d", resp.StatusCode)
	}
}

// AWSConfig is an SDK config that reaches this server, built as production
// code builds it (config.LoadDefaultConfig reading the environment Start set).
func (s *Server) AWSConfig(t testing.TB) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("testing", "testing", "")),
	)
	if err != nil {
		t.Fatalf("moto: aws config: %v", err)
	}
	return cfg
}

// Run wraps testing.M.Run and stops the shared server afterwards; use it
// from TestMain in packages that start moto.
func Run(m interface{ Run() int }) int {
	code := m.Run()
	mu.Lock()
	if shared != nil {
		shared.proc.Stop()
		shared = nil
	}
	mu.Unlock()
	return code
}
