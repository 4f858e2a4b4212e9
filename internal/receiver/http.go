package receiver

import (
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/uuid"
)

// HTTPHandler serves the receiver over plain HTTP (make dev, tests) by
// building the request a function URL would deliver, so the Lambda code
// path is the one that runs.
func (h *Handler) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read one byte past the limit: enough for the handler to answer 413
		// without holding an arbitrarily large body in memory.
		body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBodyBytes+1))
		if err != nil {
			http.Error(w, `{"error":"could not read body"}`, http.StatusBadRequest)
			return
		}
		resp, _ := h.Handle(r.Context(), FunctionURLRequest(r, body))
		for k, v := range resp.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.WriteString(w, resp.Body)
	})
}

// FunctionURLRequest is the payload-format-2.0 event Lambda builds for a
// function URL request: lower-case header names, repeated headers joined
// with commas.
func FunctionURLRequest(r *http.Request, body []byte) events.LambdaFunctionURLRequest {
	headers := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	now := time.Now()
	ev := events.LambdaFunctionURLRequest{
		Version:        "2.0",
		RawPath:        r.URL.Path,
		RawQueryString: r.URL.RawQuery,
		Headers:        headers,
		Body:           string(body),
	}
	ev.RequestContext.RequestID = uuid.New()
	ev.RequestContext.DomainName = r.Host
	ev.RequestContext.TimeEpoch = now.UnixMilli()
	ev.RequestContext.HTTP = events.LambdaFunctionURLRequestContextHTTPDescription{
		Method: r.Method, Path: r.URL.Path, Protocol: r.Proto, SourceIP: ip, UserAgent: r.UserAgent(),
	}
	return ev
}
