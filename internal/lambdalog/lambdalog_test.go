package lambdalog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

func TestInvocation(t *testing.T) {
	var s Starts
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	ctx = context.WithValue(ctx, "x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
	for i, want := range []map[string]any{
		{"function_request_id": "req-1", "cold_start": true, "xray_trace_id": "1-5759e988-bd862e3fe1be46a994272793"},
		{"function_request_id": "req-1", "cold_start": false, "xray_trace_id": "1-5759e988-bd862e3fe1be46a994272793"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, nil)).With(Static("my-fn")...)
		s.Begin(ctx).Logger(log).Info("x")
		var got map[string]any
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want["service"], want["function_name"] = Service, "my-fn"
		for k, v := range want {
			if got[k] != v {
				t.Errorf("invocation %d: %s = %v, want %v (line %s)", i+1, k, got[k], v, buf.String())
			}
		}
	}
	// Outside Lambda (make dev, tests): no request or trace id, no function name.
	inv := (&Starts{}).Begin(context.Background())
	if inv.RequestID != "" || inv.TraceID != "" || !inv.ColdStart || len(inv.Attrs()) != 1 {
		t.Errorf("outside Lambda: %+v, attrs %v", inv, inv.Attrs())
	}
	if got := Static(""); len(got) != 2 {
		t.Errorf("Static without a function name = %v, want service only", got)
	}
}

func TestTraceRoot(t *testing.T) {
	for in, want := range map[string]string{
		"Root=1-abc;Parent=def;Sampled=0":  "1-abc",
		" Parent=def ; Root=1-abc ":        "1-abc",
		"Parent=def":                       "",
		"Root=":                            "",
		"":                                 "",
		"Root=" + string(make([]byte, 65)): "",
	} {
		if got := traceRoot(in); got != want {
			t.Errorf("traceRoot(%q) = %q, want %q", in, got, want)
		}
	}
}
