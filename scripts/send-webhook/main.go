// Command send-webhook sends a Buildkite webhook payload to a URL the way
// Buildkite does: X-Buildkite-Event from the body (or -event), and an
// X-Buildkite-Signature HMAC over "<now>.<body>" (or, with -mode token, the
// plain X-Buildkite-Token). It prints the status and the response body.
//
//	go run ./scripts/send-webhook -url http://127.0.0.1:8080 internal/buildkite/testdata/build_finished_failed.json
//	cat payload.json | go run ./scripts/send-webhook -event build.finished -
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("send-webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", envOr("WEBHOOK_URL", "http://127.0.0.1:8080"), "receiver URL (env WEBHOOK_URL)")
	token := fs.String("token", envOr("BUILDKITE_WEBHOOK_TOKEN", "local-webhook-token"), "webhook token (env BUILDKITE_WEBHOOK_TOKEN; of two newline-separated tokens, as during rotation, the first)")
	event := fs.String("event", "", "X-Buildkite-Event (default: the body's \"event\" key)")
	mode := fs.String("mode", "signature", "signature (HMAC, as recommended) or token (plain X-Buildkite-Token)")
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: send-webhook [flags] <payload.json | ->")
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
	body, err := readPayload(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintln(stderr, "send-webhook:", err)
		return 2
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
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Buildkite-Request")
	req.Header.Set("X-Buildkite-Event", *event)
	switch *mode {
	case "signature":
		req.Header.Set("X-Buildkite-Signature", Sign(*token, time.Now(), body))
	case "token":
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
	if resp.StatusCode >= 300 {
		return 1
	}
	return 0
}

// Sign builds the X-Buildkite-Signature value: HMAC-SHA256 keyed with the
// token over "<unix seconds>.<body>", hex.
func Sign(token string, now time.Time, body []byte) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "timestamp=" + ts + ",signature=" + hex.EncodeToString(mac.Sum(nil))
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
