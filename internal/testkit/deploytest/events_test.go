package deploytest

// Tests over events/: every file is generated from the Buildkite fixtures
// (and kept so by TestEventFilesUpToDate), decodes into the aws-lambda-go
// type Lambda hands the function, and gets the documented outcome from the
// real handlers built from events/env.json.

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/local/devstack"
	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/receiver"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// The events/*.json files are generated from the Buildkite fixtures, so they
// can never drift from them or from the queue message format:
//
//	go test ./internal/testkit/deploytest -run TestEventFilesUpToDate -update
//
// TestEventFilesUpToDate fails whenever a file differs from what this
// generator makes. events/env.json is written by hand.
var update = flag.Bool("update", false, "rewrite events/*.json from internal/buildkite/testdata")

const (
	eventsDir   = "../../../events"
	fixturesDir = "../../../internal/buildkite/testdata"

	// webhookToken is events/env.json's BUILDKITE_WEBHOOK_TOKEN; the events
	// use the plain-token header mode so they stay valid (signatures expire).
	webhookToken = "local-webhook-token"
	wrongToken   = "not-the-webhook-token"

	urlID     = "abcdefghijklmnopqrstuvwxyz123456"
	urlDomain = urlID + ".lambda-url.us-east-1.on.aws"

	// queueARN is what the event source mapping of a stack named
	// buildkite-sqibs delivers (template.yaml names the queue
	// <stack>-events.fifo).
	queueARN = "arn:aws:sqs:us-east-1:123456789012:buildkite-sqibs-events.fifo"
	senderID = "AROAEXAMPLEROLEID1234:buildkite-sqibs-receiver"
)

// receiverSpec describes one function URL event file.
type receiverSpec struct {
	file      string
	fixture   string // file in internal/buildkite/testdata
	token     string
	base64    bool // body base64-encoded, as Lambda delivers a body without Content-Type
	requestID string
	at        time.Time
}

var receiverSpecs = []receiverSpec{
	{file: "receiver-ping.json", fixture: "ping.json", token: webhookToken,
		requestID: "6a3d0c1e-5b8f-4c2a-9e71-0d4f2b8a1c01", at: at(11, 59, 0)},
	{file: "receiver-build-failed.json", fixture: "build_finished_failed.json", token: webhookToken,
		requestID: "6a3d0c1e-5b8f-4c2a-9e71-0d4f2b8a1c02", at: at(12, 0, 1)},
	{file: "receiver-build-passed.json", fixture: "build_finished_passed.json", token: webhookToken,
		requestID: "6a3d0c1e-5b8f-4c2a-9e71-0d4f2b8a1c03", at: at(12, 10, 1)},
	{file: "receiver-build-blocked.json", fixture: "build_finished_blocked.json", token: webhookToken,
		requestID: "6a3d0c1e-5b8f-4c2a-9e71-0d4f2b8a1c04", at: at(11, 56, 31)},
	{file: "receiver-wrong-token.json", fixture: "build_finished_failed.json", token: wrongToken,
		requestID: "6a3d0c1e-5b8f-4c2a-9e71-0d4f2b8a1c05", at: at(12, 0, 2)},
	{file: "receiver-base64.json", fixture: "build_failing.json", token: webhookToken, base64: true,
		requestID: "6a3d0c1e-5b8f-4c2a-9e71-0d4f2b8a1c06", at: at(11, 58, 42)},
}

// sqsSpec describes one SQS event file: each record is the message the
// receiver queues for one receiver event.
type sqsSpec struct {
	file    string
	records []string // receiver event files
	version int      // envelope version written (queue.Version unless testing a newer one)
}

var sqsSpecs = []sqsSpec{
	{file: "dispatcher-failed-passed.json", records: []string{"receiver-build-failed.json", "receiver-build-passed.json"}, version: queue.Version},
	{file: "dispatcher-unknown-version.json", records: []string{"receiver-build-failed.json"}, version: 2},
}

func at(h, m, s int) time.Time { return time.Date(2024, 8, 5, h, m, s, 0, time.UTC) }

// reconcilerSpec describes one EventBridge scheduled event file (what the
// reconciler's schedule delivers; its content does not matter to it).
type reconcilerSpec struct {
	file string
	id   string
	at   time.Time
}

var reconcilerSpecs = []reconcilerSpec{
	{file: "reconciler-scheduled.json", id: "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", at: at(12, 20, 0)},
}

// scheduledEvent is an EventBridge "Scheduled Event", with the keys and in
// the order EventBridge sends them.
type scheduledEvent struct {
	Version    string         `json:"version"`
	ID         string         `json:"id"`
	DetailType string         `json:"detail-type"`
	Source     string         `json:"source"`
	Account    string         `json:"account"`
	Time       string         `json:"time"`
	Region     string         `json:"region"`
	Resources  []string       `json:"resources"`
	Detail     map[string]any `json:"detail"`
}

func buildScheduledEvent(s reconcilerSpec) scheduledEvent {
	return scheduledEvent{
		Version: "0", ID: s.id, DetailType: "Scheduled Event", Source: "aws.events", Account: "123456789012",
		Time: s.at.Format(time.RFC3339), Region: "us-east-1",
		// The rule SAM makes for ReconcilerFunction's event "Schedule".
		Resources: []string{"arn:aws:events:us-east-1:123456789012:rule/buildkite-sqibs-ReconcilerFunctionSchedule-1Q2W3E4R5T6Y"},
		Detail:    map[string]any{},
	}
}

// Function URL request, payload format 2.0, with the keys Lambda sends and
// in its order (aws-lambda-go's type leaves out routeKey and stage).
type urlEvent struct {
	Version         string            `json:"version"`
	RouteKey        string            `json:"routeKey"`
	RawPath         string            `json:"rawPath"`
	RawQueryString  string            `json:"rawQueryString"`
	Headers         map[string]string `json:"headers"`
	RequestContext  urlContext        `json:"requestContext"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

type urlContext struct {
	AccountID    string  `json:"accountId"`
	APIID        string  `json:"apiId"`
	DomainName   string  `json:"domainName"`
	DomainPrefix string  `json:"domainPrefix"`
	HTTP         urlHTTP `json:"http"`
	RequestID    string  `json:"requestId"`
	RouteKey     string  `json:"routeKey"`
	Stage        string  `json:"stage"`
	Time         string  `json:"time"`
	TimeEpoch    int64   `json:"timeEpoch"`
}

type urlHTTP struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Protocol  string `json:"protocol"`
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

// SQS event as the event source mapping delivers it for a FIFO queue.
type sqsEvent struct {
	Records []sqsRecord `json:"Records"`
}

type sqsRecord struct {
	MessageID         string            `json:"messageId"`
	ReceiptHandle     string            `json:"receiptHandle"`
	Body              string            `json:"body"`
	Attributes        map[string]string `json:"attributes"`
	MessageAttributes map[string]any    `json:"messageAttributes"`
	MD5OfBody         string            `json:"md5OfBody"`
	EventSource       string            `json:"eventSource"`
	EventSourceARN    string            `json:"eventSourceARN"`
	AWSRegion         string            `json:"awsRegion"`
}

// compactFixture is a fixture as Buildkite puts it on the wire.
func compactFixture(name string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(fixturesDir, name))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b.Bytes(), nil
}

func eventName(body []byte) (string, error) {
	var v struct {
		Event string `json:"event"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Event == "" {
		return "", fmt.Errorf("fixture has no event key: %v", err)
	}
	return v.Event, nil
}

func buildReceiverEvent(s receiverSpec) (urlEvent, []byte, error) {
	body, err := compactFixture(s.fixture)
	if err != nil {
		return urlEvent{}, nil, err
	}
	event, err := eventName(body)
	if err != nil {
		return urlEvent{}, nil, err
	}
	const sourceIP = "100.24.0.10" // an address in a Buildkite-like AWS range; any works
	h := map[string]string{
		"content-length":          strconv.Itoa(len(body)),
		"content-type":            "application/json",
		"host":                    urlDomain,
		"user-agent":              "Buildkite-Request",
		"x-amzn-tls-cipher-suite": "TLS_AES_128_GCM_SHA256",
		"x-amzn-tls-version":      "TLSv1.3",
		"x-amzn-trace-id":         "Root=1-66b0bf61-" + hex.EncodeToString([]byte(s.requestID[:12])),
		"x-buildkite-event":       event,
		"x-buildkite-token":       s.token,
		"x-forwarded-for":         sourceIP,
		"x-forwarded-port":        "443",
		"x-forwarded-proto":       "https",
	}
	ev := urlEvent{
		Version: "2.0", RouteKey: "$default", RawPath: "/", RawQueryString: "", Headers: h,
		RequestContext: urlContext{
			AccountID: "anonymous", // what Lambda sends for AuthType NONE
			APIID:     urlID, DomainName: urlDomain, DomainPrefix: urlID,
			HTTP:      urlHTTP{Method: "POST", Path: "/", Protocol: "HTTP/1.1", SourceIP: sourceIP, UserAgent: "Buildkite-Request"},
			RequestID: s.requestID, RouteKey: "$default", Stage: "$default",
			Time: s.at.Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: s.at.UnixMilli(),
		},
		Body: string(body),
	}
	if s.base64 {
		// A body without Content-Type is binary to a function URL: base64.
		delete(h, "content-type")
		ev.Body = base64.StdEncoding.EncodeToString(body)
		ev.IsBase64Encoded = true
	}
	return ev, body, nil
}

// queuedMessage is the message the receiver queues for the receiver event
// s, built exactly as internal/receiver builds it (the receiver's request id
// is the function URL's request id when Lambda's own is not at hand).
func queuedMessage(s receiverSpec, rules incident.Rules) (queue.Message, error) {
	_, body, err := buildReceiverEvent(s)
	if err != nil {
		return queue.Message{}, err
	}
	event, _ := eventName(body)
	p, err := buildkite.Parse(body, event)
	if err != nil {
		return queue.Message{}, err
	}
	d := rules.Classify(p)
	if !d.Act {
		return queue.Message{}, fmt.Errorf("%s: the rules ignore it (%s)", s.file, d.Reason)
	}
	return queue.NewMessage(p, d.ID, s.requestID, s.at)
}

func buildSQSEvent(s sqsSpec, rules incident.Rules) (sqsEvent, error) {
	var ev sqsEvent
	for i, name := range s.records {
		spec, ok := receiverSpecByFile(name)
		if !ok {
			return ev, fmt.Errorf("%s: no receiver event %s", s.file, name)
		}
		m, err := queuedMessage(spec, rules)
		if err != nil {
			return ev, err
		}
		body := m.Body
		if s.version != queue.Version {
			prefix := []byte(`{"v":` + strconv.Itoa(queue.Version) + `,`)
			if !bytes.HasPrefix(body, prefix) {
				return ev, fmt.Errorf("envelope does not start with %s", prefix)
			}
			body = append([]byte(`{"v":`+strconv.Itoa(s.version)+`,`), body[len(prefix):]...)
		}
		sent := spec.at.Add(40 * time.Millisecond)
		sum := md5.Sum(body)
		n := len(ev.Records) + 1
		ev.Records = append(ev.Records, sqsRecord{
			MessageID:     fmt.Sprintf("2f0c6d1e-8a4b-4f7e-b3c9-%012d", sqsIndex(s.file)*100+n),
			ReceiptHandle: fmt.Sprintf("AQEBexampleReceiptHandle%s%02d==", hex.EncodeToString([]byte(s.file[:10])), n),
			Body:          string(body),
			Attributes: map[string]string{
				"ApproximateReceiveCount":          "1",
				"SentTimestamp":                    strconv.FormatInt(sent.UnixMilli(), 10),
				"SequenceNumber":                   fmt.Sprintf("188874%014d", sent.Unix()*10+int64(i)),
				"MessageGroupId":                   queue.SafeFIFOID(m.GroupID),
				"SenderId":                         senderID,
				"MessageDeduplicationId":           queue.SafeFIFOID(m.DedupID),
				"ApproximateFirstReceiveTimestamp": strconv.FormatInt(sent.Add(60*time.Millisecond).UnixMilli(), 10),
			},
			MessageAttributes: map[string]any{},
			MD5OfBody:         hex.EncodeToString(sum[:]),
			EventSource:       "aws:sqs",
			EventSourceARN:    queueARN,
			AWSRegion:         "us-east-1",
		})
	}
	return ev, nil
}

func sqsIndex(file string) int {
	for i, s := range sqsSpecs {
		if s.file == file {
			return i + 1
		}
	}
	return 0
}

func receiverSpecByFile(name string) (receiverSpec, bool) {
	for _, s := range receiverSpecs {
		if s.file == name {
			return s, true
		}
	}
	return receiverSpec{}, false
}

// generateEvents returns every generated events/ file by name. rules are the
// receiver's, from events/env.json (they pick the message group).
func generateEvents() (map[string][]byte, error) {
	rules, err := envRules("ReceiverFunction")
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, s := range receiverSpecs {
		ev, _, err := buildReceiverEvent(s)
		if err != nil {
			return nil, err
		}
		if out[s.file], err = encodeFile(ev); err != nil {
			return nil, err
		}
	}
	for _, s := range sqsSpecs {
		ev, err := buildSQSEvent(s, rules)
		if err != nil {
			return nil, err
		}
		if out[s.file], err = encodeFile(ev); err != nil {
			return nil, err
		}
	}
	for _, s := range reconcilerSpecs {
		if out[s.file], err = encodeFile(buildScheduledEvent(s)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// encodeFile is indented JSON without HTML escaping, so bodies stay readable.
func encodeFile(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// envSection reads one function's section of events/env.json.
func envSection(function string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(eventsDir, "env.json"))
	if err != nil {
		return nil, err
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(b, &file); err != nil {
		return nil, fmt.Errorf("events/env.json: want {\"Function\": {\"NAME\": \"string value\"}}: %w", err)
	}
	sec, ok := file[function]
	if !ok {
		return nil, fmt.Errorf("events/env.json has no %s section", function)
	}
	return sec, nil
}

func envRules(function string) (incident.Rules, error) {
	sec, err := envSection(function)
	if err != nil {
		return incident.Rules{}, err
	}
	r := config.NewReader(config.Map(sec))
	rules := incident.LoadRules(r)
	return rules, r.Err()
}

// TestEventFilesUpToDate: every generated events/ file is byte for byte what
// the generator makes from the fixtures; -update rewrites them.
func TestEventFilesUpToDate(t *testing.T) {
	want, err := generateEvents()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range want {
		path := filepath.Join(eventsDir, name)
		if *update {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (run: go test ./internal/testkit/deploytest -run TestEventFilesUpToDate -update)", err)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("events/%s is out of date with internal/buildkite/testdata or the queue format (run: go test ./internal/testkit/deploytest -run TestEventFilesUpToDate -update)", name)
		}
	}
	// Every events/*.json is either generated or env.json, and has an
	// expected outcome below: a new file cannot go untested.
	files, err := filepath.Glob(filepath.Join(eventsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if name == "env.json" {
			continue
		}
		if _, ok := want[name]; !ok {
			t.Errorf("events/%s is not generated by this test: add it to receiverSpecs, sqsSpecs or reconcilerSpecs", name)
		}
		_, r := receiverWants[name]
		_, d := dispatcherWants[name]
		_, c := reconcilerWants[name]
		if !r && !d && !c {
			t.Errorf("events/%s has no expected outcome in receiverWants, dispatcherWants or reconcilerWants", name)
		}
	}
	if len(files) != len(want)+1 {
		t.Errorf("events/ holds %d JSON files, want %d generated + env.json", len(files), len(want))
	}
}

// TestEnvFile: events/env.json has the `sam local invoke --env-vars` shape,
// string values only, names from DESIGN §2, and values every loader accepts.
func TestEnvFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(eventsDir, "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]any
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatalf("env.json: %v", err)
	}
	rules := []string{"ALERT_BRANCHES", "ALERT_PIPELINES", "ALERT_ON_FAILING", "ALERT_ON_CANCELED", "ALERT_PULL_REQUESTS", "JOB_INCIDENTS", "SEVERITY", "ALERT_AFTER_FAILURES", "SECRET_TTL", "AWS_ENDPOINT_URL_SQS"}
	known := map[string][]string{
		"ReceiverFunction": append([]string{"QUEUE_URL", "WEBHOOK_TOKEN_SECRET_ARN", "BUILDKITE_WEBHOOK_TOKEN",
			"SIGNATURE_MAX_AGE", "MAX_BODY_BYTES", "ALLOW_TOKEN_HEADER"}, rules...),
		"DispatcherFunction": append([]string{"SQIBS_URL", "SQIBS_TOKEN_SECRET_ARN", "SQIBS_API_TOKEN", "SQIBS_AUTH",
			"SQIBS_FROM", "SQIBS_TIMEOUT", "DLQ_URL", "RETRY_FOR", "MAX_BACKOFF", "STATE_TABLE", "AWS_ENDPOINT_URL_DYNAMODB",
			"BUILDKITE_API_TOKEN", "BUILDKITE_API_TOKEN_SECRET_ARN", "BUILDKITE_API_URL"}, rules...),
		"ReconcilerFunction": {"STATE_TABLE", "QUEUE_URL", "BUILDKITE_API_TOKEN", "BUILDKITE_API_TOKEN_SECRET_ARN",
			"BUILDKITE_API_URL", "SECRET_TTL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"},
	}
	if len(file) != len(known) {
		t.Errorf("env.json sections = %d, want exactly ReceiverFunction, DispatcherFunction and ReconcilerFunction", len(file))
	}
	for fn, names := range known {
		sec, ok := file[fn]
		if !ok {
			t.Errorf("env.json has no %s section", fn)
			continue
		}
		for k, v := range sec {
			if _, ok := v.(string); !ok {
				t.Errorf("%s.%s is %T: SAM wants string values", fn, k, v)
			}
			if !slices.Contains(names, k) {
				t.Errorf("%s.%s is not a variable %s reads", fn, k, fn)
			}
		}
	}
	rec, err := envSection("ReceiverFunction")
	if err != nil {
		t.Fatal(err)
	}
	if rec["BUILDKITE_WEBHOOK_TOKEN"] != webhookToken || rec["ALLOW_TOKEN_HEADER"] != "true" {
		t.Errorf("the receiver events need BUILDKITE_WEBHOOK_TOKEN=%s and ALLOW_TOKEN_HEADER=true", webhookToken)
	}
	if !strings.HasSuffix(rec["QUEUE_URL"], ".fifo") {
		t.Errorf("QUEUE_URL %q is not a FIFO queue", rec["QUEUE_URL"])
	}
	dis, err := envSection("DispatcherFunction")
	if err != nil {
		t.Fatal(err)
	}
	if dis["SQIBS_URL"] != "http://127.0.0.1:8081/v1/process" {
		t.Errorf("SQIBS_URL = %q: want the dev server's simulator (DESIGN §6)", dis["SQIBS_URL"])
	}
	if dis["SQIBS_API_TOKEN"] != "local-sqibs-token" {
		t.Errorf("SQIBS_API_TOKEN: want the dev server's default local-sqibs-token")
	}
	// The API is off for the receiver and the dispatcher (nothing changes
	// for their events); the reconciler needs it, and reaches make dev's
	// simulator with its default token.
	for _, sec := range []map[string]string{rec, dis} {
		if sec["BUILDKITE_API_TOKEN"] != "" || sec["BUILDKITE_API_TOKEN_SECRET_ARN"] != "" {
			t.Errorf("a Buildkite API token is set for the receiver or the dispatcher: their events would change")
		}
	}
	recon, err := envSection("ReconcilerFunction")
	if err != nil {
		t.Fatal(err)
	}
	if recon["BUILDKITE_API_TOKEN"] != devstack.DefaultBuildkiteAPIToken || recon["BUILDKITE_API_URL"] != "http://"+devstack.DefaultBuildkiteSimAddr+"/v2" {
		t.Errorf("the reconciler's API: want make dev's simulator (%s) and its default token", devstack.DefaultBuildkiteSimAddr)
	}
	if recon["QUEUE_URL"] != rec["QUEUE_URL"] {
		t.Errorf("the reconciler queues to %q, the receiver to %q: want the same event queue", recon["QUEUE_URL"], rec["QUEUE_URL"])
	}
	// Every loader accepts the values (the functions would stop at start otherwise).
	newReceiver(t, rec, &testkit.Publisher[queue.Message]{}, io.Discard)
	newDispatcher(t, dis, "http://127.0.0.1:1/v1/process", nil, &deadLetters{}, io.Discard)
	newReconcilerFn(t, recon, "http://127.0.0.1:1/v2", memstate.New(), &testkit.Publisher[queue.Message]{}, io.Discard)
}

// receiverWant is the expected answer of the receiver to one event file.
type receiverWant struct {
	status int
	body   string // exact, or a prefix when it ends in "…"
	queued bool
}

var receiverWants = map[string]receiverWant{
	"receiver-ping.json":          {http.StatusOK, `{"status":"pong"}`, false},
	"receiver-build-failed.json":  {http.StatusOK, `{"status":"queued","id":"…`, true},
	"receiver-build-passed.json":  {http.StatusOK, `{"status":"queued","id":"…`, true},
	"receiver-build-blocked.json": {http.StatusAccepted, `{"status":"ignored","reason":"build is blocked, not finished"}`, false},
	"receiver-wrong-token.json":   {http.StatusUnauthorized, `{"error":"unauthorized"}`, false},
	"receiver-base64.json":        {http.StatusOK, `{"status":"queued","id":"…`, true},
}

func (w receiverWant) check(t *testing.T, status int, body string) {
	t.Helper()
	if status != w.status {
		t.Errorf("status %d, want %d (body %s)", status, w.status, body)
	}
	if p, ok := strings.CutSuffix(w.body, "…"); ok {
		if !strings.HasPrefix(body, p) {
			t.Errorf("body %s, want prefix %s", body, p)
		}
	} else if body != w.body {
		t.Errorf("body %s, want %s", body, w.body)
	}
}

// queuedID is the message id in a {"status":"queued","id":"..."} body.
func queuedID(t *testing.T, body string) string {
	t.Helper()
	var v struct{ Status, ID string }
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Status != "queued" || v.ID == "" {
		t.Fatalf("not a queued answer: %s", body)
	}
	return v.ID
}

// dispatcherWant checks the outcome of one SQS event file.
type dispatcherWant func(t *testing.T, ev events.SQSEvent, sim *sqibssim.Server, deadLettered []deadLetter)

var dispatcherWants = map[string]dispatcherWant{
	// A failed then a passed build of one incident: delivered in order, so
	// the trigger opens the incident and the resolve closes it.
	"dispatcher-failed-passed.json": func(t *testing.T, ev events.SQSEvent, sim *sqibssim.Server, dl []deadLetter) {
		if n := sim.Calls(); n != 2 {
			t.Errorf("SQIBS got %d calls, want 2", n)
		}
		in := sim.Incidents()
		if len(in) != 1 {
			t.Fatalf("SQIBS incidents = %+v, want one", in)
		}
		if in[0].ID != "acme/deploy-api/main" || in[0].Status != sqibssim.StatusResolved || in[0].Triggers != 1 {
			t.Errorf("incident = %+v, want acme/deploy-api/main opened once then resolved (the passed build must come second)", in[0])
		}
		if !strings.Contains(in[0].Title, "deploy-api #1234 failed on main") {
			t.Errorf("incident title %q does not describe the failed build", in[0].Title)
		}
		if len(dl) != 0 {
			t.Errorf("dead-lettered %+v, want nothing", dl)
		}
	},
	// An envelope from a newer receiver: straight to the DLQ, loudly, never to SQIBS.
	"dispatcher-unknown-version.json": func(t *testing.T, ev events.SQSEvent, sim *sqibssim.Server, dl []deadLetter) {
		if n := sim.Calls(); n != 0 {
			t.Errorf("SQIBS got %d calls, want none", n)
		}
		want := []deadLetter{{id: ev.Records[0].MessageId, group: ev.Records[0].Attributes["MessageGroupId"],
			body: ev.Records[0].Body, reason: dispatcher.ReasonUnknownVersion}}
		if !slices.Equal(dl, want) {
			t.Errorf("dead-lettered %+v, want %+v", dl, want)
		}
	},
}

func readEvent(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(eventsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("events/%s does not decode into %T: %v", name, v, err)
	}
}

type deadLetter struct{ id, group, body, reason string }

// deadLetters is a dispatcher.DeadLetters that keeps what it is given.
type deadLetters struct {
	mu   sync.Mutex
	msgs []deadLetter
}

func (d *deadLetters) DeadLetter(_ context.Context, m events.SQSMessage, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, deadLetter{m.MessageId, m.Attributes["MessageGroupId"], m.Body, reason})
	return nil
}

func (d *deadLetters) all() []deadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.msgs)
}

func noAWS() (aws.Config, error) {
	return aws.Config{}, errors.New("events/env.json configures literal tokens: no AWS call expected")
}

// newReceiver builds the receiver as functions/receiver does (receiver.FromEnv), from
// env, queueing to pub.
func newReceiver(t *testing.T, env map[string]string, pub queue.Publisher, logs io.Writer) *receiver.Handler {
	t.Helper()
	h, err := receiver.FromEnv(config.Map(env), receiver.Deps{Publisher: pub,
		Base: app.Base{AWS: noAWS, Log: slog.New(slog.NewJSONHandler(logs, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// newDispatcher builds the dispatcher as functions/dispatcher does (dispatcher.FromEnv),
// from env with SQIBS_URL replaced by sqibsURL, dead-lettering to dlq and
// reaching SQIBS with hc.
func newDispatcher(t *testing.T, env map[string]string, sqibsURL string, hc *http.Client, dlq dispatcher.DeadLetters, logs io.Writer) *dispatcher.Handler {
	t.Helper()
	env = maps.Clone(env)
	env["SQIBS_URL"] = sqibsURL
	h, err := dispatcher.FromEnv(config.Map(env), dispatcher.Deps{DeadLetters: dlq, Visibility: noVisibility{}, HTTPClient: hc,
		Base: app.Base{AWS: noAWS, Log: slog.New(slog.NewJSONHandler(logs, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// noVisibility leaves retry delays to the queue: these events have none.
type noVisibility struct{}

func (noVisibility) SetVisibility(context.Context, string, string, time.Duration) error { return nil }

// TestReceiverEvents runs every receiver-*.json through the real handler.
func TestReceiverEvents(t *testing.T) {
	env, err := envSection("ReceiverFunction")
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range receiverSpecs {
		t.Run(spec.file, func(t *testing.T) {
			var req events.LambdaFunctionURLRequest
			readEvent(t, spec.file, &req)
			if req.Version != "2.0" || req.RequestContext.HTTP.Method != http.MethodPost || req.Headers["x-buildkite-event"] == "" {
				t.Fatalf("not a function URL POST with X-Buildkite-Event: %+v", req.RequestContext)
			}
			pub := &testkit.Publisher[queue.Message]{}
			var logs bytes.Buffer
			h := newReceiver(t, env, pub, &logs)
			resp, err := h.Handle(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			want := receiverWants[spec.file]
			want.check(t, resp.StatusCode, resp.Body)
			for _, secret := range []string{webhookToken, wrongToken, "SECRET-"} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log holds %q:\n%s", secret, logs.String())
				}
			}
			if !want.queued {
				if pub.Len() != 0 {
					t.Errorf("queued %d messages, want none", pub.Len())
				}
				return
			}
			if pub.Len() != 1 {
				t.Fatalf("queued %d messages, want 1", pub.Len())
			}
			if id := queuedID(t, resp.Body); id != "msg-1" {
				t.Errorf("answered id %q, want the publisher's msg-1", id)
			}
			m := pub.Messages()[0]
			if m.GroupID != "acme/deploy-api/main" {
				t.Errorf("group %q, want acme/deploy-api/main", m.GroupID)
			}
			env, err := queue.Decode(m.Body)
			if err != nil {
				t.Fatal(err)
			}
			if env.Event != req.Headers["x-buildkite-event"] || env.RequestID != req.RequestContext.RequestID {
				t.Errorf("envelope event %q request %q, want %q %q", env.Event, env.RequestID, req.Headers["x-buildkite-event"], req.RequestContext.RequestID)
			}
			if bytes.Contains(m.Body, []byte("SECRET-")) {
				t.Errorf("a secret sentinel reached the queue: %s", m.Body)
			}
		})
	}
}

// TestDispatcherRecordsAreWhatTheReceiverQueues: each SQS record holds the
// message the real receiver queues for its receiver event (same group,
// dedup id and payload; received_at is the receiver's clock, so it differs).
func TestDispatcherRecordsAreWhatTheReceiverQueues(t *testing.T) {
	env, err := envSection("ReceiverFunction")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sqsSpecs {
		var ev events.SQSEvent
		readEvent(t, s.file, &ev)
		if len(ev.Records) != len(s.records) {
			t.Fatalf("%s: %d records, want %d", s.file, len(ev.Records), len(s.records))
		}
		for i, rec := range ev.Records {
			var req events.LambdaFunctionURLRequest
			readEvent(t, s.records[i], &req)
			pub := &testkit.Publisher[queue.Message]{}
			if resp, _ := newReceiver(t, env, pub, io.Discard).Handle(t.Context(), req); pub.Len() != 1 {
				t.Fatalf("%s: the receiver queued nothing: %d %s", s.records[i], resp.StatusCode, resp.Body)
			}
			m := pub.Messages()[0]
			if got := rec.Attributes["MessageGroupId"]; got != m.GroupID {
				t.Errorf("%s record %d: MessageGroupId %q, receiver uses %q", s.file, i, got, m.GroupID)
			}
			if got := rec.Attributes["MessageDeduplicationId"]; got != m.DedupID {
				t.Errorf("%s record %d: MessageDeduplicationId %q, receiver uses %q", s.file, i, got, m.DedupID)
			}
			sum := md5.Sum([]byte(rec.Body))
			if rec.Md5OfBody != hex.EncodeToString(sum[:]) || rec.EventSource != "aws:sqs" || rec.EventSourceARN != queueARN {
				t.Errorf("%s record %d: md5OfBody/eventSource/eventSourceARN inconsistent", s.file, i)
			}
			var got, want map[string]json.RawMessage
			if err := json.Unmarshal([]byte(rec.Body), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(m.Body, &want); err != nil {
				t.Fatal(err)
			}
			if string(got["v"]) != strconv.Itoa(s.version) {
				t.Errorf("%s record %d: v = %s, want %d", s.file, i, got["v"], s.version)
			}
			for _, k := range []string{"event", "request_id", "payload"} {
				if !bytes.Equal(got[k], want[k]) {
					t.Errorf("%s record %d: %s differs from what the receiver queues:\n got %s\nwant %s", s.file, i, k, got[k], want[k])
				}
			}
		}
	}
}

// TestDispatcherEvents runs every dispatcher-*.json through the real handler
// against the SQIBS simulator.
func TestDispatcherEvents(t *testing.T) {
	env, err := envSection("DispatcherFunction")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sqsSpecs {
		t.Run(s.file, func(t *testing.T) {
			var ev events.SQSEvent
			readEvent(t, s.file, &ev)
			sim := sqibssim.New(env["SQIBS_API_TOKEN"])
			srv := httptest.NewServer(sim)
			t.Cleanup(srv.Close)
			dl := &deadLetters{}
			h := newDispatcher(t, env, srv.URL+"/v1/process", srv.Client(), dl, io.Discard)
			resp, err := h.Handle(t.Context(), ev)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.BatchItemFailures) != 0 {
				t.Errorf("batch item failures %+v, want none", resp.BatchItemFailures)
			}
			dispatcherWants[s.file](t, ev, sim, dl.all())
		})
	}
}
