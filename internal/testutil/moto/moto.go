// Package moto runs a moto_server (a local AWS API emulator) for tests.
//
// One server is started lazily per test binary and shared; each test gets a
// clean slate through POST /moto-api/reset. Tests that need it call Start and
// are skipped with a clear message when moto_server is not on PATH, unless
// REQUIRE_MOTO=1 (set by .ci/run), where a missing moto fails the test so a
// skip can never hide in a green CI run.
package moto

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Server is a running moto_server.
type Server struct {
	URL string // http://127.0.0.1:<port>
	cmd *exec.Cmd
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
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		if os.Getenv("REQUIRE_MOTO") == "1" {
			t.Fatalf("moto_server is not on PATH but REQUIRE_MOTO=1")
		}
		t.Skip("moto_server not on PATH: skipping test against the AWS emulator (pip install 'moto[server]' to run it)")
	}
	port, err := freePort()
	if err != nil {
		t.Fatalf("moto: free port: %v", err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
	if os.Getenv("MOTO_VERBOSE") == "" {
		cmd.Stdout, cmd.Stderr = nil, nil
	} else {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("moto: start %s: %v", bin, err)
	}
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			s.kill()
			t.Fatalf("moto: %s did not answer within 30s: %v", s.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	shared = s
	return s
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

func (s *Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_, _ = s.cmd.Process.Wait()
	}
}

// Run wraps testing.M.Run and stops the shared server afterwards; use it
// from TestMain in packages that start moto.
func Run(m interface{ Run() int }) int {
	code := m.Run()
	mu.Lock()
	if shared != nil {
		shared.kill()
		shared = nil
	}
	mu.Unlock()
	return code
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
