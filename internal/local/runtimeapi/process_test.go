package runtimeapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/buildtags"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// These tests run a real aws-lambda-go bootstrap (testdata/hello) against
// the server, built once for the package.

var hello struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if hello.path != "" {
		_ = os.RemoveAll(filepath.Dir(hello.path))
	}
	os.Exit(code)
}

func helloBinary(t *testing.T) string {
	t.Helper()
	hello.once.Do(func() {
		dir, err := os.MkdirTemp("", "runtimeapi-hello-")
		if err != nil {
			hello.err = err
			return
		}
		hello.path = filepath.Join(dir, "bootstrap")
		cmd := exec.Command("go", "build", "-tags", buildtags.Lambda, "-trimpath", "-o", hello.path, "./testdata/hello")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			hello.err = fmt.Errorf("go build testdata/hello: %v\n%s", err, out)
		}
	})
	if hello.err != nil {
		t.Fatal(hello.err)
	}
	return hello.path
}

func runHello(t *testing.T, env ...string) (*Server, *Process, *testkit.Buffer) {
	t.Helper()
	bin := helloBinary(t)
	s := startServer(t)
	stderr := &testkit.Buffer{}
	p, err := Exec(t.Context(), bin, env, s, nil, stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("bootstrap stderr:\n%s", stderr)
		}
	})
	return s, p, stderr
}

func invokeOK(t *testing.T, p *Process, event string) Result {
	t.Helper()
	res, err := p.Invoke(t.Context(), []byte(event), 10*time.Second)
	if err != nil {
		t.Fatalf("invoke %s: %v", event, err)
	}
	return res
}

func TestEchoRoundTrips(t *testing.T) {
	_, p, _ := runHello(t)
	events := []string{
		`{"hello":"world"}`,
		`{"nested":{"list":[1,2.5,"three",null,true]},"unicode":"é✓"}`,
		`[1,2,3]`,
		`"just a string"`,
		`{"big":"` + strings.Repeat("x", 1<<20) + `"}`,
	}
	ids := map[string]bool{}
	// One process serves them all, in sequence, as a warm Lambda does.
	for _, ev := range events {
		res := invokeOK(t, p, ev)
		if res.Err != nil {
			t.Fatalf("function error: %v", res.Err)
		}
		if string(res.Payload) != ev {
			t.Errorf("payload = %.80s, want %.80s", res.Payload, ev)
		}
		if ids[res.RequestID] {
			t.Errorf("request id %s reused", res.RequestID)
		}
		ids[res.RequestID] = true
	}
}

func TestFunctionErrorKeepsProcess(t *testing.T) {
	_, p, _ := runHello(t)
	res := invokeOK(t, p, `{"fail":true}`)
	if res.Err == nil {
		t.Fatalf("no function error; payload %s", res.Payload)
	}
	if res.Err.Message != "asked to fail" || res.Err.Type != "errorString" {
		t.Errorf("error = %+v, want errorString: asked to fail", res.Err)
	}
	var body map[string]any
	if err := json.Unmarshal(res.Payload, &body); err != nil || body["errorMessage"] != "asked to fail" {
		t.Errorf("payload %s is not the error JSON (%v)", res.Payload, err)
	}
	// A returned error does not end the process: the next event is served.
	if res := invokeOK(t, p, `{"after":"error"}`); res.Err != nil || string(res.Payload) != `{"after":"error"}` {
		t.Errorf("second invocation = %+v", res)
	}
}

func TestPanicIsErrorThenExit(t *testing.T) {
	_, p, _ := runHello(t)
	res := invokeOK(t, p, `{"panic":true}`)
	if res.Err == nil {
		t.Fatalf("no function error; payload %s", res.Payload)
	}
	if res.Err.Message != "asked to panic" || res.Err.Type != "string" || len(res.Err.StackTrace) == 0 {
		t.Errorf("error = %+v, want string: asked to panic with a stack trace", res.Err)
	}
	<-p.Done() // aws-lambda-go exits after reporting a panic
	if p.Err() == nil {
		t.Error("process exited cleanly after a panic")
	}
	if _, err := p.Invoke(t.Context(), []byte(`{}`), time.Second); !errors.Is(err, ErrExited) {
		t.Errorf("invoke after exit: %v, want ErrExited", err)
	}
}

func TestStreamErrorTrailers(t *testing.T) {
	_, p, _ := runHello(t)
	res := invokeOK(t, p, `{"stream_error":true}`)
	if res.Err == nil || res.Err.Message != "stream broke" || res.Err.HeaderType != "errorString" {
		t.Errorf("error = %+v, want the trailer's errorString: stream broke", res.Err)
	}
}

func TestExitWithoutAnswer(t *testing.T) {
	_, p, _ := runHello(t)
	_, err := p.Invoke(t.Context(), []byte(`{"exit":true}`), 10*time.Second)
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exit status 3: hello: asked to exit") {
		t.Errorf("error = %v, want ErrExited with the exit status and last stderr line", err)
	}
}

func TestInitCrash(t *testing.T) {
	s, p, stderr := runHello(t, "HELLO_INIT_FAIL=1")
	_, err := p.Invoke(t.Context(), []byte(`{}`), 10*time.Second)
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "init failed on purpose") {
		t.Errorf("error = %v, want ErrExited naming the cause", err)
	}
	if !strings.Contains(stderr.String(), "init failed on purpose") {
		t.Errorf("stderr not forwarded: %q", stderr)
	}
	_ = s.Close()
	if _, ok := <-s.FirstNext(); ok {
		t.Error("FirstNext fired for a bootstrap that never asked for an event")
	}
}

func TestTimeout(t *testing.T) {
	_, p, _ := runHello(t)
	_, err := p.Invoke(t.Context(), []byte(`{"sleep_ms":30000}`), 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("error = %v, want ErrTimeout", err)
	}
}

func TestCallerCredentialsWin(t *testing.T) {
	_, p, _ := runHello(t, "AWS_ACCESS_KEY_ID=AKIDREAL", "AWS_SECRET_ACCESS_KEY=real-secret")
	for name, want := range map[string]string{"AWS_ACCESS_KEY_ID": "AKIDREAL", "AWS_SECRET_ACCESS_KEY": "real-secret"} {
		res := invokeOK(t, p, `{"env":"`+name+`"}`)
		if !strings.Contains(string(res.Payload), `"`+want+`"`) {
			t.Errorf("%s: %s, want %q", name, res.Payload, want)
		}
	}
}

func TestEnvironmentAndContext(t *testing.T) {
	_, p, _ := runHello(t,
		"AWS_LAMBDA_FUNCTION_NAME=hello",
		"AWS_REGION=eu-west-1",
		"AWS_LAMBDA_RUNTIME_API=192.0.2.1:9", // ignored: the server's address wins
		"MY_SETTING=one",
		"MY_SETTING=two", // later entries win
	)
	tests := []struct{ name, want string }{
		{"AWS_LAMBDA_FUNCTION_NAME", "hello"},
		{"AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"},
		{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"},
		{"AWS_REGION", "eu-west-1"},
		{"AWS_DEFAULT_REGION", "eu-west-1"},
		{"_HANDLER", "bootstrap"},
		{"LAMBDA_TASK_ROOT", filepath.Dir(helloBinary(t))},
		{"MY_SETTING", "two"},
		// Lambda always provides credentials: placeholders when the caller has none.
		{"AWS_ACCESS_KEY_ID", "local-emulator"},
		{"AWS_SECRET_ACCESS_KEY", "local-emulator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := invokeOK(t, p, `{"env":"`+tt.name+`"}`)
			var got struct {
				V string `json:"env_value"`
			}
			if err := json.Unmarshal(res.Payload, &got); err != nil || got.V != tt.want {
				t.Errorf("%s = %q (payload %s), want %q", tt.name, got.V, res.Payload, tt.want)
			}
		})
	}

	before := time.Now()
	res := invokeOK(t, p, `{"context":true}`)
	var lc struct {
		RequestID   string `json:"request_id"`
		FunctionARN string `json:"function_arn"`
		DeadlineMS  int64  `json:"deadline_ms"`
		TraceID     string `json:"trace_id"`
	}
	if err := json.Unmarshal(res.Payload, &lc); err != nil {
		t.Fatal(err)
	}
	if lc.RequestID != res.RequestID {
		t.Errorf("function saw request id %q, Result has %q", lc.RequestID, res.RequestID)
	}
	if want := "arn:aws:lambda:eu-west-1:000000000000:function:hello"; lc.FunctionARN != want {
		t.Errorf("function ARN = %q, want %q", lc.FunctionARN, want)
	}
	if lo := before.Add(10 * time.Second).UnixMilli(); lc.DeadlineMS < lo {
		t.Errorf("deadline %d earlier than invoke time + timeout %d", lc.DeadlineMS, lo)
	}
	if !strings.HasPrefix(lc.TraceID, "Root=1-") {
		t.Errorf("trace id %q", lc.TraceID)
	}
}

func TestRegionDefault(t *testing.T) {
	_, p, _ := runHello(t, "AWS_REGION=") // empty counts as unset
	res := invokeOK(t, p, `{"env":"AWS_REGION"}`)
	if string(res.Payload) != `{"env_value":"us-east-1"}` {
		t.Errorf("payload = %s, want us-east-1", res.Payload)
	}
}

func TestStartupPeakRSSAndStop(t *testing.T) {
	s, p, _ := runHello(t)
	first := s.FirstNext()
	at, ok := <-first
	if !ok {
		t.Fatal("FirstNext closed without a time")
	}
	if at.Before(p.Started()) {
		t.Errorf("first /next at %v, before the process started at %v", at, p.Started())
	}
	invokeOK(t, p, `{"warm":true}`)

	live := p.PeakRSS()
	if runtime.GOOS == "linux" && live <= 0 {
		t.Errorf("PeakRSS while running = %d, want > 0", live)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if runtime.GOOS == "linux" && p.PeakRSS() <= 0 {
		t.Errorf("PeakRSS after exit = %d, want > 0", p.PeakRSS())
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}
