// Command hello is the smallest aws-lambda-go function: it echoes its input.
// runtimeapi's tests run it through the local Runtime API, and it is the
// hello-world baseline for bootstrap start-up figures.
//
// Input flags drive the failure paths: {"fail":true} returns an error,
// {"panic":true} panics, {"stream_error":true} returns a response stream
// that fails midway, {"exit":true} exits without answering, {"sleep_ms":n}
// sleeps past any deadline, {"env":"NAME"} returns a variable's value and
// {"context":true} the invocation metadata. HELLO_INIT_FAIL makes init fail.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type input struct {
	Fail        bool   `json:"fail"`
	Panic       bool   `json:"panic"`
	StreamError bool   `json:"stream_error"`
	Exit        bool   `json:"exit"`
	Env         string `json:"env"` // echo this variable's value as "env_value"
	Context     bool   `json:"context"`
	SleepMS     int    `json:"sleep_ms"` // ignores the deadline, like a stuck handler
}

type failingReader struct{ r io.Reader }

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("stream broke")
	}
	return n, err
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var in input
	_ = json.Unmarshal(raw, &in) // anything but an object is simply echoed
	switch {
	case in.SleepMS > 0:
		time.Sleep(time.Duration(in.SleepMS) * time.Millisecond)
		return raw, nil
	case in.Fail:
		return nil, errors.New("asked to fail")
	case in.Panic:
		panic("asked to panic")
	case in.StreamError:
		return &failingReader{strings.NewReader(`{"partial":`)}, nil
	case in.Exit:
		os.Stderr.WriteString("hello: asked to exit\n")
		os.Exit(3)
	case in.Env != "":
		return map[string]string{"env_value": os.Getenv(in.Env)}, nil
	case in.Context:
		lc, _ := lambdacontext.FromContext(ctx)
		dl, _ := ctx.Deadline()
		return map[string]any{
			"request_id":   lc.AwsRequestID,
			"function_arn": lc.InvokedFunctionArn,
			"deadline_ms":  dl.UnixMilli(),
			"trace_id":     ctx.Value("x-amzn-trace-id"),
		}, nil
	}
	return raw, nil
}

func main() {
	if os.Getenv("HELLO_INIT_FAIL") != "" {
		os.Stderr.WriteString("hello: init failed on purpose\n")
		os.Exit(4)
	}
	lambda.Start(handle)
}
