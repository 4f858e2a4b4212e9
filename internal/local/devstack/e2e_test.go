package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

type harness struct {
	t      *testing.T
	s      *Stack
	token  string
	out    *testkit.Buffer
	logs   *testkit.Buffer
	client *http.Client
}

func start(t *testing.T, env map[string]string, token string, tune ...func(*Options)) *harness {
	t.Helper()
	base := map[string]string{"DEV_ADDR": "127.0.0.1:0", "SQIBS_SIM_ADDR": "127.0.0.1:0", "BUILDKITE_SIM_ADDR": "127.0.0.1:0"}
	for k, v := range env {
		base[k] = v
	}
	h := &harness{t: t, token: token, out: &testkit.Buffer{}, logs: &testkit.Buffer{}, client: &http.Client{Timeout: 10 * time.Second}}
	// 22 s: 5 s to start deliveries past the delivery budget (17 s with the
	// Buildkite API simulator make dev starts).
	po := poller.Options{Wait: 200 * time.Millisecond, InvokeTimeout: 22 * time.Second}
	if _, real := env["QUEUE_URL"]; real {
		// One receive at a time on moto: its ReceiveMessage takes no lock,
		// so two concurrent receives can both get one FIFO message, or two
		// messages of one group, under load, which SQS never does. (The
		// in-process queue runs the default concurrency and keeps FIFO.)
		po.Concurrency = 1
	}
	o := Options{
		Env:    config.Map(base),
		Stdout: h.out,
		Stderr: h.logs,
		// Short, so a receive abandoned by StopDispatcher (whose messages
		// stay invisible) costs the test seconds, not the wait's whole budget;
		// long enough that a batch slowed by a loaded machine is not
		// redelivered while still in flight.
		Queue: memqueue.Options{VisibilityTimeout: 5 * time.Second},
		// moto gap: FIFO order (internal/testkit/moto): moto hands a group
		// out of order once a visibility timeout expires. Backoffs under a
		// second go to SQS as a visibility of 0, which moto keeps in order,
		// so scenario's order checks hold on moto too; the order under
		// real backoffs is checked on the in-process queue (faults_test.go).
		BackoffBase: 10 * time.Millisecond,
		DrainWait:   5 * time.Second,
		Poller:      po,
	}
	for _, f := range tune {
		f(&o)
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return h
}

// payload is a real fixture with the build's number, state and id set, so
// a scenario can play a sequence of builds.
func payload(t *testing.T, fixture string, number int, state, branch string) []byte {
	t.Helper()
	m := fixtureMap(t, fixture)
	if build, ok := m["build"].(map[string]any); ok && number > 0 {
		build["number"] = number
		build["state"] = state
		build["id"] = fmt.Sprintf("build-%s-%d", branch, number)
		build["branch"] = branch
	}
	out, _ := json.Marshal(m)
	return out
}

func (h *harness) send(body []byte, event string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.s.ReceiverURL, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if event != "" {
		req.Header.Set("X-Buildkite-Event", event)
	}
	req.Header.Set("X-Buildkite-Signature", buildkite.Sign(h.token, time.Now(), body))
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) mustQueue(body []byte) {
	h.t.Helper()
	if code, b := h.send(body, ""); code != 200 || !strings.Contains(b, `"queued"`) {
		h.t.Fatalf("send: %d %s", code, b)
	}
}

func (h *harness) wait(what string, cond func(*sqibssim.Server) bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.s.Sim.Wait(ctx, cond); err != nil {
		h.t.Fatalf("waiting for %s: %v\nincidents: %+v\nlogs:\n%s", what, err, h.s.Sim.Incidents(), h.logs.String())
	}
}

// recorder sees every call the simulator processes, in order, and can
// fail the next few.
type recorder struct {
	mu       sync.Mutex
	calls    []string // "<id> <status> #<build>"
	failNext int
	failed   int
}

func (r *recorder) hook() func(call int, body []byte) *sqibssim.Fault {
	return func(call int, body []byte) *sqibssim.Fault {
		r.mu.Lock()
		if r.failNext > 0 {
			r.failNext--
			r.failed++
			r.mu.Unlock()
			return &sqibssim.Fault{Status: http.StatusInternalServerError}
		}
		r.mu.Unlock()
		var p struct {
			Event struct {
				ID     string `json:"id"`
				Status string `json:"status"`
				Number int    `json:"build_number"`
			} `json:"event"`
		}
		_ = json.Unmarshal(body, &p)
		r.mu.Lock()
		r.calls = append(r.calls, fmt.Sprintf("%s %s #%d", p.Event.ID, p.Event.Status, p.Event.Number))
		r.mu.Unlock()
		return nil
	}
}

func (r *recorder) list() []string { r.mu.Lock(); defer r.mu.Unlock(); return slices.Clone(r.calls) }

// scenario is the end-to-end story of issue 4, run on both queues.
func scenario(t *testing.T, h *harness) {
	const id = "acme/deploy-api/main"
	rec := &recorder{}
	h.s.Sim.SetFault(rec.hook())
	// processed is true once at least n calls were recorded and the
	// simulator has finished processing every recorded one (the hook runs
	// before processing).
	processed := func(n int) func(*sqibssim.Server) bool {
		return func(s *sqibssim.Server) bool { l := len(rec.list()); return l >= n && s.Calls() >= l }
	}

	t.Run("failed opens, passed resolves", func(t *testing.T) {
		h.mustQueue(payload(t, "build_finished_failed.json", 10, "failed", "main"))
		h.wait("incident open", func(s *sqibssim.Server) bool { _, ok := s.Open(id); return ok })
		h.mustQueue(payload(t, "build_finished_passed.json", 11, "passed", "main"))
		h.wait("incident resolved", func(s *sqibssim.Server) bool {
			in := s.Incidents()
			return len(in) == 1 && in[0].Status == sqibssim.StatusResolved
		})
	})

	t.Run("blocked scheduled ping do nothing", func(t *testing.T) {
		before := h.s.Sim.Calls()
		for _, c := range []struct {
			file, event string
			code        int
		}{
			{"build_finished_blocked.json", "", 202}, {"build_scheduled.json", "", 202}, {"ping.json", "ping", 200},
		} {
			b := testkit.Fixture(t, c.file)
			if code, body := h.send(b, c.event); code != c.code {
				t.Errorf("%s: %d %s, want %d", c.file, code, body, c.code)
			}
		}
		// They answered without queuing; a real event sent after them is the
		// only thing SQIBS sees.
		seen := len(rec.list())
		h.mustQueue(payload(t, "build_finished_failed.json", 20, "failed", "main"))
		h.wait("build 20", processed(seen+1))
		if got := rec.list()[seen:]; !slices.Equal(got, []string{id + " FAILED #20"}) {
			t.Errorf("SQIBS saw %v", got)
		}
		if got := h.s.Sim.Calls(); got != before+1 {
			t.Errorf("SQIBS calls went from %d to %d, want one more", before, got)
		}
	})

	t.Run("duplicate delivery gives one call", func(t *testing.T) {
		before := len(rec.list())
		body := payload(t, "build_finished_failed.json", 30, "failed", "main")
		// Both copies arrive while the first is still queued. SQS drops the
		// second for 5 minutes whatever happens to the first, but moto only
		// compares against messages still in the queue: were the first
		// delivered and deleted in between (a loaded machine), moto would
		// take the copy and the test would be measuring moto.
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.s.StopDispatcher(stopCtx); err != nil {
			t.Fatal(err)
		}
		h.mustQueue(body)
		h.mustQueue(body)
		h.mustQueue(payload(t, "build_finished_passed.json", 31, "passed", "main"))
		if err := h.s.StartDispatcher(); err != nil {
			t.Fatal(err)
		}
		h.wait("resolve after the duplicate", func(s *sqibssim.Server) bool {
			in := s.Incidents()
			return len(in) == 2 && in[1].Status == sqibssim.StatusResolved
		})
		got := rec.list()[before:]
		want := []string{id + " FAILED #30", id + " PASSED #31"}
		if !slices.Equal(got, want) {
			t.Errorf("SQIBS saw %v, want %v", got, want)
		}
	})

	t.Run("five alternating builds arrive in order", func(t *testing.T) {
		before := len(rec.list())
		var want []string
		for i := range 5 {
			n, state, file, status := 40+i, "failed", "build_finished_failed.json", "FAILED"
			if i%2 == 1 {
				state, file, status = "passed", "build_finished_passed.json", "PASSED"
			}
			h.mustQueue(payload(t, file, n, state, "main"))
			want = append(want, fmt.Sprintf("%s %s #%d", id, status, n))
		}
		h.wait("five deliveries", processed(before+5))
		if got := rec.list()[before:]; !slices.Equal(got, want) {
			t.Errorf("order:\n got %v\nwant %v", got, want)
		}
		if _, open := h.s.Sim.Open(id); !open {
			t.Error("last build failed: incident should be open")
		}
	})

	t.Run("SQIBS 500 twice then delivered", func(t *testing.T) {
		rec.mu.Lock()
		rec.failNext = 2
		rec.mu.Unlock()
		before := len(rec.list())
		h.mustQueue(payload(t, "build_finished_passed.json", 50, "passed", "main"))
		h.wait("resolve after two 500s", processed(before+1))
		if _, open := h.s.Sim.Open(id); open {
			t.Error("incident still open after the retried resolve")
		}
		rec.mu.Lock()
		if rec.failed != 2 {
			t.Errorf("%d calls failed, want 2", rec.failed)
		}
		rec.mu.Unlock()
		if !strings.Contains(h.logs.String(), "SQIBS delivery failed: will retry") {
			t.Error("no retry logged")
		}
	})

	t.Run("2 MiB body is 413", func(t *testing.T) {
		code, body := h.send(bytes.Repeat([]byte(" "), 2<<20), "build.finished")
		if code != 413 || body != `{"error":"payload too large"}` {
			t.Errorf("%d %s", code, body)
		}
	})

	// Nothing was left behind or dead-lettered.
	if q := h.s.Queue; q != nil {
		if d := q.DeadLetters(); len(d) != 0 {
			t.Errorf("dead letters: %+v", d)
		}
	}
	for _, s := range []string{"SECRET-", "@example.com", h.token} {
		if strings.Contains(h.logs.String(), s) {
			t.Errorf("logs contain %q", s)
		}
	}
}

func TestEndToEndInProcess(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "e2e-token"}, "e2e-token")
	if !strings.Contains(h.out.String(), "receiver listening on "+h.s.ReceiverURL) {
		t.Errorf("no ready line: %q", h.out.String())
	}
	if strings.Contains(h.out.String(), "e2e-token") {
		t.Error("a configured token was printed")
	}
	scenario(t, h)
}

func TestDefaultTokensArePrinted(t *testing.T) {
	h := start(t, nil, DefaultWebhookToken)
	out := h.out.String()
	for _, s := range []string{DefaultWebhookToken, DefaultSQIBSToken, "receiver listening on http://127.0.0.1:"} {
		if !strings.Contains(out, s) {
			t.Errorf("stdout lacks %q:\n%s", s, out)
		}
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !strings.HasPrefix(lines[len(lines)-1], "receiver listening on ") {
		t.Errorf("the ready line is not last: %q", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			t.Errorf("stderr line is not JSON: %q", line)
		}
	}
	h.mustQueue(payload(t, "build_finished_failed.json", 1, "failed", "main"))
	h.wait("incident open", func(s *sqibssim.Server) bool { _, ok := s.Open("acme/deploy-api/main"); return ok })
}

// The same scenario through SQS FIFO (with a DLQ), Secrets Manager and the
// incident state in DynamoDB, on moto.
func TestEndToEndMoto(t *testing.T) {
	m := moto.Start(t)
	cfg := m.AWSConfig(t)
	ctx := context.Background()
	q := sqs.NewFromConfig(cfg)
	dlq, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("e2e-dlq.fifo"), Attributes: map[string]string{"FifoQueue": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	dlqAttrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl, AttributeNames: []types.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	main, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("e2e.fifo"), Attributes: map[string]string{
		"FifoQueue": "true", "VisibilityTimeout": "5", // as the in-process queue's, see start
		"RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":"%s","maxReceiveCount":"10"}`, dlqAttrs.Attributes["QueueArn"]),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := dynamo.CreateTable(ctx, m.DynamoDB(t), "e2e-state"); err != nil {
		t.Fatal(err)
	}
	sm := secretsmanager.NewFromConfig(cfg)
	wh, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("webhook"), SecretString: aws.String("moto-webhook-token\n")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("sqibs"), SecretString: aws.String("moto-sqibs-token")})
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, map[string]string{
		"QUEUE_URL": aws.ToString(main.QueueUrl), "DLQ_URL": aws.ToString(dlq.QueueUrl),
		"WEBHOOK_TOKEN_SECRET_ARN": aws.ToString(wh.ARN), "SQIBS_TOKEN_SECRET_ARN": aws.ToString(st.ARN),
		"STATE_TABLE": "e2e-state", "AWS_REGION": "us-east-1",
	}, "moto-webhook-token")
	if h.s.Queue != nil {
		t.Fatal("QUEUE_URL set but the in-process queue is in use")
	}
	if strings.Contains(h.out.String(), "moto-") {
		t.Error("a configured token was printed")
	}
	scenario(t, h)

	// Nothing left on the queue or in the DLQ. The poller deletes a batch
	// once its handler returned, which is after SQIBS saw its last event:
	// give that delete a moment (an in-flight message that stays is a
	// failure all the same).
	for _, u := range []*string{main.QueueUrl, dlq.QueueUrl} {
		deadline := time.Now().Add(3 * time.Second)
		for {
			a, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: u, AttributeNames: []types.QueueAttributeName{"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"}})
			if err != nil {
				t.Fatal(err)
			}
			if a.Attributes["ApproximateNumberOfMessages"] == "0" && a.Attributes["ApproximateNumberOfMessagesNotVisible"] == "0" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s not empty: %v", aws.ToString(u), a.Attributes)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// make dev shows what it dead-letters: a loud log line, GET /dead-letters
// and a section of the simulator's page while it runs, stdout at shutdown.
func TestDeadLettersShown(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "e2e-token"}, "e2e-token")
	h.s.Sim.SetFault(func(int, []byte) *sqibssim.Fault { return &sqibssim.Fault{Status: http.StatusBadRequest} }) // permanent
	h.mustQueue(payload(t, "build_finished_failed.json", 77, "failed", "main"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for len(h.s.DeadLetters()) == 0 {
		if ctx.Err() != nil {
			t.Fatalf("nothing dead-lettered:\n%s", h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := h.client.Get(h.s.SimURL + "/dead-letters")
	if err != nil {
		t.Fatal(err)
	}
	var list []sqibssim.DeadLetter
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || len(list) != 1 {
		t.Fatalf("GET /dead-letters: %v %+v", err, list)
	}
	if d := list[0]; d.Reason != "sqibs_rejected" || d.IncidentID != "acme/deploy-api/main" || d.Event != "build.finished" || d.Build != 77 || d.MessageID == "" {
		t.Errorf("dead letter %+v", d)
	}
	page, err := h.client.Get(h.s.SimURL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if !strings.Contains(string(b), "sqibs_rejected") || !strings.Contains(string(b), list[0].MessageID) {
		t.Errorf("the simulator's page does not show the dead letter")
	}
	if !strings.Contains(h.logs.String(), `"level":"ERROR","msg":"message moved to the dead letters","service":"buildkite-sqibs","reason":"sqibs_rejected","message_id":"`+list[0].MessageID+`","incident_id":"acme/deploy-api/main"`) {
		t.Errorf("no ERROR line for the dead letter:\n%s", h.logs.String())
	}
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	if err := h.s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	out := h.out.String()
	if strings.Contains(out, "left in the queue") {
		t.Errorf("a drained queue reported events left:\n%s", out)
	}
	if !strings.Contains(out, "dead letters: 1 ") || !strings.Contains(out, "sqibs_rejected  acme/deploy-api/main  build.finished #77  receives=1  message_id="+list[0].MessageID) {
		t.Errorf("stdout at shutdown:\n%s", out)
	}
}

// What the in-process queue still holds at exit ends nowhere: each event is
// logged at ERROR by id and counted on stdout, beside the dead letters.
func TestLeftInQueueReported(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "e2e-token"}, "e2e-token")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := h.s.StopDispatcher(ctx); err != nil {
		t.Fatal(err)
	}
	h.mustQueue(payload(t, "build_finished_failed.json", 5, "failed", "main"))
	h.mustQueue(payload(t, "build_finished_failed.json", 6, "failed", "main"))
	left := h.s.Queue.Left()
	if len(left) != 2 {
		t.Fatalf("queue holds %d, want 2", len(left))
	}
	if err := h.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if out := h.out.String(); !strings.Contains(out, "left in the queue: 2 (not sent; they are lost with this process)\n") ||
		!strings.Contains(out, "dead letters: none\n") {
		t.Errorf("stdout at shutdown:\n%s", out)
	}
	for _, m := range left {
		line := `"level":"ERROR","msg":"shutdown: event left in the in-process queue, lost with the process","service":"buildkite-sqibs","message_id":"` +
			m.MessageId + `","incident_id":"` + m.Attributes["MessageGroupId"] + `"`
		if !strings.Contains(h.logs.String(), line) {
			t.Errorf("no ERROR line for %s:\n%s", m.MessageId, h.logs.String())
		}
	}
}
