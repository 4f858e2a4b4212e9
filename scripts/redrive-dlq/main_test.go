package main

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

type fixture struct {
	client        *sqs.Client
	mainURL, dlq  string
	dlqIDs        map[string]string // body → DLQ message id
	groupOfBody   map[string]string
	reasonsOfBody map[string]string
}

// setup: a FIFO main queue and a FIFO DLQ holding 3 messages in 2 groups,
// as the dispatcher dead-letters them (reason and original id attributes).
func setup(t *testing.T) *fixture {
	t.Helper()
	srv := moto.Start(t)
	client := sqs.NewFromConfig(srv.AWSConfig(t))
	f := &fixture{client: client, dlqIDs: map[string]string{},
		groupOfBody:   map[string]string{"a1": "acme/api/main", "b1": "acme/web/main", "a2": "acme/api/main"},
		reasonsOfBody: map[string]string{"a1": "sqibs_rejected", "b1": "unknown_envelope_version", "a2": "sqibs_rejected"}}
	f.mainURL = moto.CreateFIFO(t, client, "buildkite-sqibs-events.fifo")
	f.dlq = moto.CreateFIFO(t, client, "buildkite-sqibs-dead-letter.fifo")
	for _, body := range []string{"a1", "b1", "a2"} {
		out, err := client.SendMessage(t.Context(), &sqs.SendMessageInput{
			QueueUrl: aws.String(f.dlq), MessageBody: aws.String(body),
			MessageGroupId: aws.String(f.groupOfBody[body]), MessageDeduplicationId: aws.String("orig-" + body),
			MessageAttributes: map[string]types.MessageAttributeValue{
				"reason":              {DataType: aws.String("String"), StringValue: aws.String(f.reasonsOfBody[body])},
				"original_message_id": {DataType: aws.String("String"), StringValue: aws.String("orig-" + body)},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		f.dlqIDs[body] = aws.ToString(out.MessageId)
	}
	return f
}

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append(args, "-wait", "0s"), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestRedrive(t *testing.T) {
	f := setup(t)

	// Dry run: lists all three, moves nothing, and leaves them visible at
	// once (else the runs below, within the 60 s hold, would find nothing).
	code, out, errOut := runCmd(t, "-dlq-url", f.dlq, "-dry-run")
	if code != 0 {
		t.Fatalf("dry run exit %d: %s", code, errOut)
	}
	for _, body := range []string{"a1", "b1", "a2"} {
		line := f.dlqIDs[body] + "\tgroup=" + f.groupOfBody[body] + "\treason=" + f.reasonsOfBody[body] + "\n"
		if !strings.Contains(out, line) {
			t.Errorf("dry run output lacks %q:\n%s", line, out)
		}
	}
	if !strings.Contains(out, "3 message(s) in the DLQ would be moved (dry run: nothing changed)") {
		t.Errorf("dry run summary missing:\n%s", out)
	}

	// -max 1 moves one message.
	code, out, errOut = runCmd(t, "-dlq-url", f.dlq, "-queue-url", f.mainURL, "-max", "1")
	if code != 0 {
		t.Fatalf("-max 1 exit %d: %s", code, errOut)
	}
	if strings.Count(out, "moved ") != 2 || !strings.Contains(out, "moved 1 message(s) from ") { // one line per message + summary
		t.Errorf("-max 1 output:\n%s", out)
	}

	// The rest.
	code, out, errOut = runCmd(t, "-dlq-url", f.dlq, "-queue-url", f.mainURL)
	if code != 0 {
		t.Fatalf("redrive exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "moved 2 message(s) from ") {
		t.Errorf("redrive output:\n%s", out)
	}

	if left := moto.Drain(t, f.client, f.dlq); len(left) != 0 {
		t.Errorf("DLQ still holds %d messages", len(left))
	}
	moved := moto.Drain(t, f.client, f.mainURL)
	byGroup := map[string][]string{}
	dedup := regexp.MustCompile(`^(.+):redrive:[0-9a-f]{16}$`)
	for _, m := range moved {
		body := aws.ToString(m.Body)
		g := m.Attributes["MessageGroupId"]
		byGroup[g] = append(byGroup[g], body)
		if g != f.groupOfBody[body] {
			t.Errorf("%s landed in group %q, want %q", body, g, f.groupOfBody[body])
		}
		d := dedup.FindStringSubmatch(m.Attributes["MessageDeduplicationId"])
		if d == nil || d[1] != f.dlqIDs[body] {
			t.Errorf("%s: deduplication id %q, want %s:redrive:<hash>", body, m.Attributes["MessageDeduplicationId"], f.dlqIDs[body])
		}
		if _, ok := m.MessageAttributes["reason"]; ok {
			t.Errorf("%s still carries the reason attribute", body)
		}
		if a := m.MessageAttributes["original_message_id"]; aws.ToString(a.StringValue) != "orig-"+body {
			t.Errorf("%s lost its original_message_id attribute", body)
		}
	}
	if !slices.Equal(byGroup["acme/api/main"], []string{"a1", "a2"}) || !slices.Equal(byGroup["acme/web/main"], []string{"b1"}) {
		t.Errorf("main queue by group = %v, want acme/api/main [a1 a2] and acme/web/main [b1]", byGroup)
	}
}

// A main queue that refuses the message: nothing is deleted, and every
// held message is visible again at once.
func TestRedriveSendFails(t *testing.T) {
	f := setup(t)
	missing := strings.TrimSuffix(f.mainURL, "buildkite-sqibs-events.fifo") + "no-such-queue.fifo"
	code, out, errOut := runCmd(t, "-dlq-url", f.dlq, "-queue-url", missing)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %s", code, out)
	}
	if !strings.Contains(errOut, "stays in the DLQ") || !strings.Contains(out, "moved 0 message(s) before stopping") {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	left := moto.Drain(t, f.client, f.dlq)
	var bodies []string
	for _, m := range left {
		bodies = append(bodies, aws.ToString(m.Body))
	}
	slices.Sort(bodies)
	if !slices.Equal(bodies, []string{"a1", "a2", "b1"}) {
		t.Errorf("DLQ holds %v right after the failed run, want all three visible", bodies)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-dlq-url", "http://x/q.fifo"}, // no -queue-url without -dry-run
		{"-dlq-url", "http://x/q.fifo", "-queue-url", "http://x/q.fifo"}, // same queue
		{"-dlq-url", "http://x/d.fifo", "-dry-run", "-max", "-1"},
		{"-dlq-url", "http://x/d.fifo", "-dry-run", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("%v: no usage message", args)
		}
	}
}

func TestDedupID(t *testing.T) {
	id := runID(time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC))
	if len(id) != 16 || id == runID(time.Date(2024, 8, 5, 12, 0, 0, 1, time.UTC)) {
		t.Fatalf("runID %q: want 16 hex digits that change with the time", id)
	}
	uuid := "2f0c6d1e-8a4b-4f7e-b3c9-000000000101"
	if got := dedupID(uuid, id); got != uuid+":redrive:"+id {
		t.Errorf("dedupID = %q", got)
	}
	long := dedupID(strings.Repeat("x", 200), id)
	if len(long) > 128 || long == dedupID(strings.Repeat("x", 201), id) {
		t.Errorf("a long id gives %q (%d chars): want <= 128 and still distinct", long, len(long))
	}
}

// Interfaces match the SDK client.
var (
	_ dlqAPI = (*sqs.Client)(nil)
	_ sender = (*sqs.Client)(nil)
)
