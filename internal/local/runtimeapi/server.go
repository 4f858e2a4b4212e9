// Package runtimeapi is a local, Docker-free stand-in for the AWS Lambda
// Runtime API: the subset an aws-lambda-go bootstrap talks to (next,
// response, error, init error), so a real bootstrap binary can be run and
// invoked on a developer machine or in a benchmark.
//
// The endpoints and headers follow
// https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html and what
// github.com/aws/aws-lambda-go/lambda/runtime_api_client.go sends and reads.
package runtimeapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/uuid"
)

// Header and path names of the Runtime API (version 2018-06-01).
const (
	HeaderRequestID          = "Lambda-Runtime-Aws-Request-Id"
	HeaderDeadlineMS         = "Lambda-Runtime-Deadline-Ms"
	HeaderInvokedFunctionARN = "Lambda-Runtime-Invoked-Function-Arn"
	HeaderTraceID            = "Lambda-Runtime-Trace-Id"
	HeaderFunctionErrorType  = "Lambda-Runtime-Function-Error-Type"
	// HeaderFunctionErrorBody is the trailer aws-lambda-go sends (base64 of
	// the error JSON) when a streamed response body fails midway.
	HeaderFunctionErrorBody = "Lambda-Runtime-Function-Error-Body"

	apiPrefix = "/2018-06-01/runtime"
)

// MaxPayload is Lambda's limit for a synchronous request or response body.
const MaxPayload = 6 << 20

// DefaultTimeout is Lambda's default function timeout, used when Invoke is
// given none.
const DefaultTimeout = 3 * time.Second

// Errors Invoke returns; test with errors.Is.
var (
	ErrClosed  = errors.New("runtime API server closed")
	ErrTimeout = errors.New("function timed out")
	ErrInit    = errors.New("function init failed")
)

// Result is the outcome of one invocation the function answered.
type Result struct {
	RequestID string
	// Payload is the response body; on a function error it is the error
	// JSON, as Lambda's Invoke API returns it.
	Payload     []byte
	ContentType string
	// Err is non-nil when the function reported an error.
	Err *FunctionError
	// Duration runs from the runtime receiving the event to the server
	// receiving its answer.
	Duration time.Duration
}

// FunctionError is what the runtime posted to /invocation/{id}/error (or
// the trailers of a failed streamed response): aws-lambda-go's
// {"errorMessage","errorType","stackTrace"} JSON.
type FunctionError struct {
	Message    string          `json:"errorMessage"`
	Type       string          `json:"errorType"`
	StackTrace json.RawMessage `json:"stackTrace,omitempty"`
	// HeaderType is the Lambda-Runtime-Function-Error-Type the runtime
	// sent, if any (aws-lambda-go sends none on /error).
	HeaderType string `json:"-"`
	// Raw is the error body exactly as posted.
	Raw []byte `json:"-"`
}

func (e *FunctionError) Error() string {
	return fmt.Sprintf("function error %s: %s", e.Type, e.Message)
}

// JSON is the error body to show a caller: the runtime's own bytes when they
// are JSON, otherwise the parsed fields.
func (e *FunctionError) JSON() []byte {
	if json.Valid(e.Raw) {
		return e.Raw
	}
	b, _ := json.Marshal(e) // plain strings and valid RawMessage: cannot fail
	return b
}

func parseFunctionError(body []byte, headerType string) *FunctionError {
	fe := &FunctionError{HeaderType: headerType, Raw: body}
	if err := json.Unmarshal(body, fe); err != nil {
		fe.Message = string(body)
		fe.StackTrace = nil
	}
	if fe.Type == "" {
		fe.Type = headerType
	}
	return fe
}

type invocation struct {
	id      string
	event   []byte
	timeout time.Duration
	trace   string

	picked   chan struct{} // closed by /next once deadline and started are set
	deadline time.Time
	started  time.Time

	done chan Result // buffered 1: the answer never blocks the handler
}

// Server is one Lambda execution environment's Runtime API. It serves one
// invocation at a time, like Lambda does per environment.
type Server struct {
	ln  net.Listener
	srv *http.Server

	queue     chan *invocation // unbuffered: an event is handed straight to a waiting /next
	closed    chan struct{}
	closeOnce sync.Once

	mu          sync.Mutex
	inflight    map[string]*invocation
	functionARN string

	firstNext     chan struct{}
	firstNextOnce sync.Once
	firstNextAt   time.Time

	initFailed   chan struct{}
	initOnce     sync.Once
	initErrorRaw []byte
}

// Start listens on a free loopback port and serves the Runtime API.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("runtime API: listen: %w", err)
	}
	s := &Server{
		ln:          ln,
		queue:       make(chan *invocation),
		closed:      make(chan struct{}),
		inflight:    map[string]*invocation{},
		functionARN: FunctionARN("us-east-1", "local"),
		firstNext:   make(chan struct{}),
		initFailed:  make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiPrefix+"/invocation/next", s.handleNext)
	mux.HandleFunc("POST "+apiPrefix+"/invocation/{id}/response", s.handleResponse)
	mux.HandleFunc("POST "+apiPrefix+"/invocation/{id}/error", s.handleError)
	mux.HandleFunc("POST "+apiPrefix+"/init/error", s.handleInitError)
	// lambda.WithEnableSIGTERM registers an internal extension; accept it so
	// such a bootstrap starts quietly.
	mux.HandleFunc("POST /2020-01-01/extension/register", s.handleExtensionRegister)
	mux.HandleFunc("GET /2020-01-01/extension/event/next", s.handleExtensionNext)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }() // returns ErrServerClosed after Close
	return s, nil
}

// FunctionARN builds the ARN sent as Lambda-Runtime-Invoked-Function-Arn,
// with the fake account id local tools use.
func FunctionARN(region, name string) string {
	return "arn:aws:lambda:" + region + ":000000000000:function:" + name
}

// SetFunctionARN changes the ARN given to later invocations; Exec sets it
// from the function's name and region.
func (s *Server) SetFunctionARN(arn string) {
	s.mu.Lock()
	s.functionARN = arn
	s.mu.Unlock()
}

// Addr is host:port, the value for AWS_LAMBDA_RUNTIME_API.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// FirstNext receives the time the runtime first asked for an invocation:
// the end of its init phase. The channel is closed without a value if the
// server closes first.
func (s *Server) FirstNext() <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		if waitFor(s.firstNext, s.closed) {
			ch <- s.firstNextAt
		}
		close(ch)
	}()
	return ch
}

// InitError receives the body the runtime posted to /init/error. The
// channel is closed without a value if the server closes first.
func (s *Server) InitError() <-chan []byte {
	ch := make(chan []byte, 1)
	go func() {
		if waitFor(s.initFailed, s.closed) {
			ch <- s.initErrorRaw
		}
		close(ch)
	}()
	return ch
}

// waitFor reports whether event happened, waiting until it does or closed
// is closed; an event that happened before closing counts.
func waitFor(event, closed <-chan struct{}) bool {
	select {
	case <-event:
		return true
	case <-closed:
		select {
		case <-event:
			return true
		default:
			return false
		}
	}
}

// Close stops the server; pending Invoke calls return ErrClosed.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.srv.Close()
	})
	return err
}

// Invoke queues event, waits for the runtime to take it, then waits up to
// timeout (Lambda's function timeout: init time excluded) for its answer.
// A function error is a Result with Err set, not an error; the error return
// is for the invocation not completing: ErrTimeout, ErrInit, ErrClosed or
// ctx's error. After ErrTimeout the runtime should be stopped, as Lambda
// would, since a late answer is refused.
func (s *Server) Invoke(ctx context.Context, event []byte, timeout time.Duration) (Result, error) {
	if len(event) > MaxPayload {
		return Result{}, fmt.Errorf("invoke: event is %d bytes, over Lambda's %d", len(event), MaxPayload)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	inv := &invocation{
		id:      uuid.New(),
		event:   event,
		timeout: timeout,
		trace:   newTraceID(),
		picked:  make(chan struct{}),
		done:    make(chan Result, 1),
	}

	select {
	case s.queue <- inv:
	case <-ctx.Done():
		return Result{}, fmt.Errorf("invoke: waiting for the runtime to ask for an event: %w", context.Cause(ctx))
	case <-s.initFailed:
		return Result{}, fmt.Errorf("invoke: %w: %s", ErrInit, oneLine(s.initErrorRaw))
	case <-s.closed:
		return Result{}, fmt.Errorf("invoke: %w", ErrClosed)
	}
	<-inv.picked // closed by handleNext right after it takes inv

	timer := time.NewTimer(time.Until(inv.deadline))
	defer timer.Stop()
	fail := func(err error) (Result, error) {
		if s.forget(inv.id) == nil {
			// answer took it first and is sending: that answer wins.
			return <-inv.done, nil
		}
		return Result{RequestID: inv.id}, err
	}
	select {
	case res := <-inv.done:
		return res, nil
	case <-timer.C:
		return fail(fmt.Errorf("request %s: %w after %s", inv.id, ErrTimeout, timeout))
	case <-ctx.Done():
		return fail(fmt.Errorf("request %s: %w", inv.id, context.Cause(ctx)))
	case <-s.closed:
		return fail(fmt.Errorf("request %s: %w", inv.id, ErrClosed))
	}
}

// forget drops an in-flight invocation so a late answer gets 404.
func (s *Server) forget(id string) *invocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv := s.inflight[id]
	delete(s.inflight, id)
	return inv
}

func (s *Server) handleNext(w http.ResponseWriter, r *http.Request) {
	s.firstNextOnce.Do(func() {
		s.firstNextAt = time.Now()
		close(s.firstNext)
	})
	var inv *invocation
	select {
	case inv = <-s.queue:
	case <-r.Context().Done():
		return
	case <-s.closed:
		writeAPIError(w, http.StatusGone, "ServerClosed", "runtime API server closed")
		return
	}
	inv.started = time.Now()
	inv.deadline = inv.started.Add(inv.timeout)
	s.mu.Lock()
	s.inflight[inv.id] = inv
	arn := s.functionARN
	s.mu.Unlock()
	close(inv.picked)

	h := w.Header()
	h.Set(HeaderRequestID, inv.id)
	h.Set(HeaderDeadlineMS, strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set(HeaderInvokedFunctionARN, arn)
	h.Set(HeaderTraceID, inv.trace)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(inv.event)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.event) // a runtime that hung up will time out
}

func (s *Server) handleResponse(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		// Lambda fails the invocation and tells the runtime 413.
		fe := &FunctionError{
			Type:    "Function.ResponseSizeTooLarge",
			Message: fmt.Sprintf("response payload size exceeded maximum allowed payload size (%d bytes)", MaxPayload),
		}
		fe.Raw, _ = json.Marshal(fe)
		if s.answer(r.PathValue("id"), Result{Payload: fe.Raw, ContentType: "application/json", Err: fe}) {
			writeAPIError(w, http.StatusRequestEntityTooLarge, fe.Type, fe.Message)
			return
		}
		writeUnknownID(w)
		return
	case err != nil:
		writeAPIError(w, http.StatusBadRequest, "InvalidRequest", "reading response body: "+err.Error())
		return
	}
	res := Result{Payload: body, ContentType: r.Header.Get("Content-Type")}
	// Trailers are readable once the body is: aws-lambda-go sets them when
	// a streamed (io.Reader) response fails midway.
	if t := r.Trailer.Get(HeaderFunctionErrorType); t != "" {
		raw, err := base64.StdEncoding.DecodeString(r.Trailer.Get(HeaderFunctionErrorBody))
		if err != nil || len(raw) == 0 {
			raw, _ = json.Marshal(map[string]string{"errorType": t, "errorMessage": "response stream failed"})
		}
		res.Err = parseFunctionError(raw, t)
		res.Payload, res.ContentType = raw, "application/json"
	}
	if !s.answer(r.PathValue("id"), res) {
		writeUnknownID(w)
		return
	}
	writeAccepted(w)
}

func (s *Server) handleError(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequest", "reading error body: "+err.Error())
		return
	}
	fe := parseFunctionError(body, r.Header.Get(HeaderFunctionErrorType))
	if !s.answer(r.PathValue("id"), Result{Payload: body, ContentType: "application/json", Err: fe}) {
		writeUnknownID(w)
		return
	}
	writeAccepted(w)
}

// answer completes the in-flight invocation id; false when there is none
// (unknown, already answered, or given up on).
func (s *Server) answer(id string, res Result) bool {
	inv := s.forget(id)
	if inv == nil {
		return false
	}
	res.RequestID = id
	res.Duration = time.Since(inv.started)
	inv.done <- res
	return true
}

func (s *Server) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPayload))
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequest", "reading init error body: "+err.Error())
		return
	}
	s.initOnce.Do(func() {
		s.initErrorRaw = body
		close(s.initFailed)
	})
	writeAccepted(w)
}

func (s *Server) handleExtensionRegister(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Lambda-Extension-Identifier", uuid.New())
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"functionName":"","functionVersion":"$LATEST","handler":"bootstrap"}`)
}

// handleExtensionNext blocks: the internal extension registers for no
// events, so Lambda never answers it either.
func (s *Server) handleExtensionNext(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.closed:
	}
}

func writeAccepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"status":"OK"}`)
}

func writeUnknownID(w http.ResponseWriter) {
	writeAPIError(w, http.StatusNotFound, "InvalidRequestID", "no invocation in flight with this request id")
}

func writeAPIError(w http.ResponseWriter, code int, typ, msg string) {
	b, _ := json.Marshal(map[string]string{"errorType": typ, "errorMessage": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// newTraceID is an unsampled X-Ray trace header.
func newTraceID() string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", time.Now().Unix(), h[:24], h[24:40])
}

// oneLine shortens an error body for a one-line message.
func oneLine(b []byte) string {
	var fe FunctionError
	if json.Unmarshal(b, &fe) == nil && (fe.Type != "" || fe.Message != "") {
		return fe.Type + ": " + fe.Message
	}
	const max = 300
	s := string(b)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
