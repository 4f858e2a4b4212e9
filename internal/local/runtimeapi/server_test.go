package runtimeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests speak the Runtime API over HTTP themselves, to pin down the
// protocol edges a real bootstrap rarely hits.

func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type invokeOutcome struct {
	res Result
	err error
}

func invokeAsync(ctx context.Context, s *Server, event string, timeout time.Duration) <-chan invokeOutcome {
	ch := make(chan invokeOutcome, 1)
	go func() {
		res, err := s.Invoke(ctx, []byte(event), timeout)
		ch <- invokeOutcome{res, err}
	}()
	return ch
}

func url(s *Server, path string) string { return "http://" + s.Addr() + "/2018-06-01/runtime" + path }

// next does what aws-lambda-go's client.next does.
func next(t *testing.T, s *Server) (http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(url(s, "/invocation/next"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("next: status %d: %s", resp.StatusCode, body)
	}
	return resp.Header, body
}

func post(t *testing.T, s *Server, path string, header http.Header, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url(s, path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestNextHeadersAndResponse(t *testing.T) {
	s := startServer(t)
	event := `{"hello":"world"}`
	before := time.Now()
	out := invokeAsync(t.Context(), s, event, 7*time.Second)
	h, body := next(t, s)
	after := time.Now()

	if string(body) != event {
		t.Errorf("event body = %s, want %s", body, event)
	}
	id := h.Get(HeaderRequestID)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Errorf("request id %q is not a UUID v4", id)
	}
	ms, err := strconv.ParseInt(h.Get(HeaderDeadlineMS), 10, 64)
	if err != nil {
		t.Fatalf("deadline header %q: %v", h.Get(HeaderDeadlineMS), err)
	}
	// The deadline counts from the hand-off, which lies between before and after.
	if lo, hi := before.Add(7*time.Second).UnixMilli(), after.Add(7*time.Second).UnixMilli(); ms < lo || ms > hi {
		t.Errorf("deadline %d not in [%d, %d]", ms, lo, hi)
	}
	if got, want := h.Get(HeaderInvokedFunctionARN), "arn:aws:lambda:us-east-1:000000000000:function:local"; got != want {
		t.Errorf("function ARN = %q, want %q", got, want)
	}
	if !regexp.MustCompile(`^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$`).MatchString(h.Get(HeaderTraceID)) {
		t.Errorf("trace id %q malformed", h.Get(HeaderTraceID))
	}
	for _, absent := range []string{"Lambda-Runtime-Client-Context", "Lambda-Runtime-Cognito-Identity"} {
		if _, ok := h[absent]; ok {
			t.Errorf("header %s sent, want absent", absent)
		}
	}

	code, _ := post(t, s, "/invocation/"+id+"/response", http.Header{"Content-Type": {"application/json"}}, []byte(`{"ok":true}`))
	if code != http.StatusAccepted {
		t.Fatalf("response: status %d, want 202", code)
	}
	o := <-out
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.RequestID != id || string(o.res.Payload) != `{"ok":true}` || o.res.Err != nil || o.res.ContentType != "application/json" {
		t.Errorf("result = %+v", o.res)
	}

	// The invocation is complete: a second answer for it is refused.
	if code, _ := post(t, s, "/invocation/"+id+"/response", nil, []byte(`{}`)); code != http.StatusNotFound {
		t.Errorf("second response: status %d, want 404", code)
	}
}

func TestErrorEndpoint(t *testing.T) {
	tests := []struct {
		name       string
		header     http.Header
		body       string
		wantType   string
		wantMsg    string
		wantHeader string
		wantJSON   string
	}{
		{
			name:     "aws-lambda-go error JSON",
			header:   http.Header{"Content-Type": {"application/json"}},
			body:     `{"errorMessage":"boom","errorType":"errorString"}`,
			wantType: "errorString", wantMsg: "boom",
			wantJSON: `{"errorMessage":"boom","errorType":"errorString"}`,
		},
		{
			name:     "error type header only used when the body has none",
			header:   http.Header{HeaderFunctionErrorType: {"Runtime.Unknown"}},
			body:     `{"errorMessage":"boom","errorType":"MyError","stackTrace":[{"path":"a.go","line":1,"label":"f"}]}`,
			wantType: "MyError", wantMsg: "boom", wantHeader: "Runtime.Unknown",
			wantJSON: `{"errorMessage":"boom","errorType":"MyError","stackTrace":[{"path":"a.go","line":1,"label":"f"}]}`,
		},
		{
			name:     "non-JSON body",
			header:   http.Header{HeaderFunctionErrorType: {"Unhandled"}},
			body:     `segfault`,
			wantType: "Unhandled", wantMsg: "segfault", wantHeader: "Unhandled",
			wantJSON: `{"errorMessage":"segfault","errorType":"Unhandled"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t)
			out := invokeAsync(t.Context(), s, `{}`, time.Minute)
			h, _ := next(t, s)
			if code, _ := post(t, s, "/invocation/"+h.Get(HeaderRequestID)+"/error", tt.header, []byte(tt.body)); code != http.StatusAccepted {
				t.Fatalf("status %d, want 202", code)
			}
			o := <-out
			if o.err != nil {
				t.Fatal(o.err)
			}
			fe := o.res.Err
			if fe == nil {
				t.Fatal("Result.Err is nil")
			}
			if fe.Type != tt.wantType || fe.Message != tt.wantMsg || fe.HeaderType != tt.wantHeader {
				t.Errorf("got type %q message %q header %q", fe.Type, fe.Message, fe.HeaderType)
			}
			if string(fe.JSON()) != tt.wantJSON {
				t.Errorf("JSON() = %s, want %s", fe.JSON(), tt.wantJSON)
			}
			if string(o.res.Payload) != tt.body {
				t.Errorf("payload = %s, want the body as posted", o.res.Payload)
			}
		})
	}
}

func TestUnknownRequestID(t *testing.T) {
	s := startServer(t)
	for _, path := range []string{"/invocation/nope/response", "/invocation/nope/error"} {
		code, body := post(t, s, path, nil, []byte(`{}`))
		if code != http.StatusNotFound || !strings.Contains(string(body), "InvalidRequestID") {
			t.Errorf("%s: status %d body %s, want 404 InvalidRequestID", path, code, body)
		}
	}
}

func TestResponseTooLarge(t *testing.T) {
	s := startServer(t)
	out := invokeAsync(t.Context(), s, `{}`, time.Minute)
	h, _ := next(t, s)
	code, _ := post(t, s, "/invocation/"+h.Get(HeaderRequestID)+"/response", nil, bytes.Repeat([]byte("x"), MaxPayload+1))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", code)
	}
	o := <-out
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.Err == nil || o.res.Err.Type != "Function.ResponseSizeTooLarge" {
		t.Errorf("Result.Err = %v, want Function.ResponseSizeTooLarge", o.res.Err)
	}
}

func TestEventTooLarge(t *testing.T) {
	s := startServer(t)
	if _, err := s.Invoke(t.Context(), make([]byte, MaxPayload+1), time.Second); err == nil {
		t.Error("no error for an event over 6 MB")
	}
}

func TestInitError(t *testing.T) {
	s := startServer(t)
	initErr := s.InitError()
	out := invokeAsync(t.Context(), s, `{}`, time.Minute)
	body := `{"errorMessage":"QUEUE_URL is required","errorType":"ConfigError"}`
	if code, _ := post(t, s, "/init/error", http.Header{HeaderFunctionErrorType: {"Runtime.ConfigError"}}, []byte(body)); code != http.StatusAccepted {
		t.Fatalf("status %d, want 202", code)
	}
	if got := <-initErr; string(got) != body {
		t.Errorf("InitError() = %s, want %s", got, body)
	}
	o := <-out
	if !errors.Is(o.err, ErrInit) || !strings.Contains(o.err.Error(), "ConfigError: QUEUE_URL is required") {
		t.Errorf("Invoke error = %v, want ErrInit naming the cause", o.err)
	}
}

func TestInvokeGivesUp(t *testing.T) {
	t.Run("timeout after hand-off", func(t *testing.T) {
		s := startServer(t)
		out := invokeAsync(t.Context(), s, `{}`, time.Millisecond)
		h, _ := next(t, s)
		o := <-out
		if !errors.Is(o.err, ErrTimeout) {
			t.Fatalf("error = %v, want ErrTimeout", o.err)
		}
		if o.res.RequestID != h.Get(HeaderRequestID) {
			t.Errorf("RequestID = %q, want %q", o.res.RequestID, h.Get(HeaderRequestID))
		}
		// A late answer is refused, so aws-lambda-go exits as Lambda would make it.
		if code, _ := post(t, s, "/invocation/"+o.res.RequestID+"/response", nil, []byte(`{}`)); code != http.StatusNotFound {
			t.Errorf("late response: status %d, want 404", code)
		}
	})
	t.Run("context cancelled before hand-off", func(t *testing.T) {
		s := startServer(t)
		ctx, cancel := context.WithCancelCause(t.Context())
		cause := errors.New("bootstrap died")
		cancel(cause)
		if _, err := s.Invoke(ctx, []byte(`{}`), time.Minute); !errors.Is(err, cause) {
			t.Errorf("error = %v, want the context's cause", err)
		}
	})
	t.Run("server closed", func(t *testing.T) {
		s := startServer(t)
		out := invokeAsync(t.Context(), s, `{}`, time.Minute)
		next(t, s)
		_ = s.Close()
		if o := <-out; !errors.Is(o.err, ErrClosed) {
			t.Errorf("error = %v, want ErrClosed", o.err)
		}
		if _, err := s.Invoke(t.Context(), []byte(`{}`), time.Minute); !errors.Is(err, ErrClosed) {
			t.Errorf("Invoke after Close: error = %v, want ErrClosed", err)
		}
		if _, ok := <-s.FirstNext(); !ok {
			t.Error("FirstNext gave no time although /next was called")
		}
		if _, ok := <-s.InitError(); ok {
			t.Error("InitError gave a value although none was posted")
		}
	})
}

func TestFirstNextFiresOnce(t *testing.T) {
	s := startServer(t)
	first := s.FirstNext()
	before := time.Now()
	out := invokeAsync(t.Context(), s, `{}`, time.Minute)
	h, _ := next(t, s)
	at := <-first
	if at.Before(before) {
		t.Errorf("FirstNext %v is before the first /next was made (%v)", at, before)
	}
	post(t, s, "/invocation/"+h.Get(HeaderRequestID)+"/response", nil, []byte(`{}`))
	<-out
	out = invokeAsync(t.Context(), s, `{}`, time.Minute)
	next(t, s)
	if again := <-s.FirstNext(); !again.Equal(at) {
		t.Errorf("FirstNext moved from %v to %v on the second /next", at, again)
	}
	_ = s.Close()
	<-out
}

func TestExtensionRegisterAccepted(t *testing.T) {
	s := startServer(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.Addr()+"/2020-01-01/extension/register", strings.NewReader(`{"events":[]}`))
	req.Header.Set("Lambda-Extension-Name", "GoLangEnableSIGTERM")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Lambda-Extension-Identifier") == "" {
		t.Errorf("register: status %d id %q", resp.StatusCode, resp.Header.Get("Lambda-Extension-Identifier"))
	}
}

func TestFunctionErrorJSONIsValid(t *testing.T) {
	fe := parseFunctionError([]byte("not \"json\"\n"), "")
	var back map[string]any
	if err := json.Unmarshal(fe.JSON(), &back); err != nil || back["errorMessage"] != "not \"json\"\n" {
		t.Errorf("JSON() = %s (%v)", fe.JSON(), err)
	}
}
