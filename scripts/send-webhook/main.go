// Command send-webhook sends a Buildkite webhook payload to a URL the way
// Buildkite does: X-Buildkite-Event from the body (or -event), and an
// X-Buildkite-Signature HMAC over "<now>.<body>" (or, with -mode token, the
// plain X-Buildkite-Token). It prints the status and the response body.
//
// Given a function URL event (events/receiver-*.json) instead of a bare
// payload, it sends that event's body (base64-decoded when the event says
// so) with its headers, as the function URL would have received them; a
// signature in the file is made anew with the current time (the old one
// is past the replay window).
//
//	go run ./scripts/send-webhook internal/buildkite/testdata/build_finished_failed.json
//	go run ./scripts/send-webhook events/receiver-build-failed.json
//	cat payload.json | go run ./scripts/send-webhook -event build.finished -
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("send-webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", defaultURL(), "receiver URL (env WEBHOOK_URL, else http://$DEV_ADDR as make dev listens, else http://127.0.0.1:8080)")
	token := fs.String("token", envOr("BUILDKITE_WEBHOOK_TOKEN", "local-webhook-token"), "webhook token (env BUILDKITE_WEBHOOK_TOKEN; of two newline-separated tokens, as during rotation, the first)")
	event := fs.String("event", "", "X-Buildkite-Event (default: the body's \"event\" key)")
	mode := fs.String("mode", "signature", "signature (HMAC, as recommended) or token (plain X-Buildkite-Token)")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: send-webhook [flags] <payload.json | function-url-event.json | ->")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	// The receiver accepts a rotation value (old and new token on two
	// lines); Buildkite holds one token, so sign with one.
	tokens := buildkite.SplitTokens(*token)
	if len(tokens) == 0 {
		fmt.Fprintln(stderr, "send-webhook: the token is empty: pass -token or set BUILDKITE_WEBHOOK_TOKEN")
		return 2
	}
	*token = tokens[0]
	raw, err := readPayload(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintln(stderr, "send-webhook:", err)
		return 2
	}
	body, headers, err := unwrap(raw)
	if err != nil {
		fmt.Fprintf(stderr, "send-webhook: %s: %v\n", fs.Arg(0), err)
		return 2
	}
	if *event == "" {
		*event = headers.Get("X-Buildkite-Event")
	}
	if *event == "" {
		var b struct {
			Event string `json:"event"`
		}
		_ = json.Unmarshal(body, &b)
		*event = b.Event
	}
	if *event == "" {
		fmt.Fprintln(stderr, "send-webhook: the body has no \"event\" key: pass -event (e.g. -event build.finished)")
		return 2
	}
	req, err := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(stderr, "send-webhook:", err)
		return 2
	}
	for k, v := range headers {
		req.Header[k] = v
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "Buildkite-Request")
	req.Header.Set("X-Buildkite-Event", *event)
	switch {
	case headers != nil && headers.Get("X-Buildkite-Token") != "" && !flagSet(fs, "mode") && !flagSet(fs, "token"):
		// The event file's own plain token, as the function URL got it.
	case *mode == "signature":
		req.Header.Del("X-Buildkite-Token")
		req.Header.Set("X-Buildkite-Signature", buildkite.Sign(*token, time.Now(), body))
	case *mode == "token":
		req.Header.Del("X-Buildkite-Signature")
		req.Header.Set("X-Buildkite-Token", *token)
	default:
		fmt.Fprintf(stderr, "send-webhook: -mode must be signature or token, not %q\n", *mode)
		return 2
	}
	resp, err := (&http.Client{Timeout: *timeout}).Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "send-webhook:", err)
		return 1
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(stdout, "%d %s\n", resp.StatusCode, bytes.TrimSpace(rb))
	if resp.StatusCode == http.StatusUnauthorized {
		fmt.Fprintln(stderr, "send-webhook: the receiver refused the token or signature. make dev prints the token it uses when it starts"+
			" (\"webhook token: ...\"; local-webhook-token unless BUILDKITE_WEBHOOK_TOKEN or WEBHOOK_TOKEN_SECRET_ARN is set):"+
			" pass it with -token or BUILDKITE_WEBHOOK_TOKEN. A signed webhook is also refused when this machine's clock is off"+
			" by more than SIGNATURE_MAX_AGE.")
	}
	if resp.StatusCode >= 300 {
		return 1
	}
	return 0
}

// unwrap returns what to send: the file itself when it is a Buildkite
// payload, or the body and headers of a function URL event (Lambda's
// payload format 2.0, as in events/receiver-*.json). Headers the function
// URL adds on its way in (host, length, x-amzn-*, x-forwarded-*) are left
// for the HTTP client and the receiver's own front end to set.
func unwrap(raw []byte) ([]byte, http.Header, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, nil, fmt.Errorf("not JSON (offset %d: %v): want a Buildkite webhook payload or a function URL event", syn.Offset, err)
		}
		return nil, nil, fmt.Errorf("not a JSON object: want a Buildkite webhook payload or a function URL event")
	}
	_, hasCtx := probe["requestContext"]
	_, hasHeaders := probe["headers"]
	if !hasCtx || !hasHeaders {
		return raw, nil, nil
	}
	var ev struct {
		Headers         map[string]string `json:"headers"`
		Body            string            `json:"body"`
		IsBase64Encoded bool              `json:"isBase64Encoded"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, nil, fmt.Errorf("function URL event: %w", err)
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return nil, nil, fmt.Errorf("function URL event: body is not valid base64: %w", err)
		}
		body = b
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil, errors.New("function URL event has an empty body")
	}
	h := http.Header{}
	for k, v := range ev.Headers {
		lk := strings.ToLower(k)
		if lk == "host" || lk == "content-length" || strings.HasPrefix(lk, "x-amzn-") || strings.HasPrefix(lk, "x-forwarded-") {
			continue
		}
		h.Set(k, v)
	}
	return body, h, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// defaultURL follows make dev: WEBHOOK_URL, else the DEV_ADDR it listens
// on, else its default address.
func defaultURL() string {
	if v := os.Getenv("WEBHOOK_URL"); v != "" {
		return v
	}
	if v := strings.TrimSpace(os.Getenv("DEV_ADDR")); v != "" {
		return "http://" + v
	}
	return "http://127.0.0.1:8080"
}

func readPayload(name string, stdin io.Reader) ([]byte, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("payload is empty")
	}
	return b, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
