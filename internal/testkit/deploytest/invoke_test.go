package deploytest

// Every events/*.json through the REAL bootstraps, the way `make invoke`
// runs them: the functions built for this machine with the deployed build tags,
// run by the scripts/invoke binary (-bootstrap) against its local Runtime
// API. The receiver queues to a FIFO queue on moto; the dispatcher delivers
// to the SQIBS simulator and dead-letters to a FIFO queue on moto.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/local/buildtags"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) {
	code := moto.Run(m)
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// bins are built once per test binary, and only by a test that gets past
// moto.Start (no build when moto is absent and the tests skip).
var bins struct {
	once sync.Once
	dir  string
	err  error
}

const repoRoot = "../../.."

func binaries(t *testing.T) (invoke, receiverBin, dispatcherBin string) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "deploytest-")
		if bins.err != nil {
			return
		}
		for _, b := range []struct{ out, pkg, tags string }{
			{"invoke", "./scripts/invoke", ""},
			{"receiver/bootstrap", "./functions/receiver", buildtags.Lambda},
			{"dispatcher/bootstrap", "./functions/dispatcher", buildtags.Lambda},
			{"reconciler/bootstrap", "./functions/reconciler", buildtags.Lambda},
		} {
			args := []string{"build", "-trimpath", "-o", filepath.Join(bins.dir, b.out)}
			if b.tags != "" {
				args = append(args, "-tags", b.tags)
			}
			cmd := exec.Command("go", append(args, b.pkg)...)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = errors.New("go " + strings.Join(cmd.Args[1:], " ") + ": " + err.Error() + "\n" + string(out))
				return
			}
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return filepath.Join(bins.dir, "invoke"), filepath.Join(bins.dir, "receiver", "bootstrap"), filepath.Join(bins.dir, "dispatcher", "bootstrap")
}

// bootstrap is the path of fn's bootstrap, built by binaries.
func bootstrap(t *testing.T, fn string) string {
	t.Helper()
	binaries(t)
	return filepath.Join(bins.dir, fn, "bootstrap")
}

// envFileWith writes events/env.json with some values replaced, for the
// invoke command's -env (whose file wins over the process environment).
func envFileWith(t *testing.T, overrides map[string]map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(eventsDir, "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	for fn, vars := range overrides {
		for k, v := range vars {
			if _, ok := file[fn][k]; !ok {
				t.Fatalf("env.json %s has no %s to override", fn, k)
			}
			file[fn][k] = v
		}
	}
	out, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "env.json")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// functionTimeout is each function's Timeout in template.yaml: the
// dispatcher starts no delivery with less than its delivery budget left (15 s),
// so it must run with its deployed timeout to behave as deployed.
var functionTimeout = map[string]string{"receiver": "5s", "dispatcher": "30s", "reconciler": "60s"}

// invoke runs `invoke -fn fn -event events/<name> -env env -bootstrap bin
// -timeout <the function's>` and returns its exit code and stdout (the
// function's response).
func invoke(t *testing.T, invokeBin, bin, fn, name, env string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, invokeBin, "-fn", fn, "-event", filepath.Join(eventsDir, name),
		"-env", env, "-bootstrap", bin, "-timeout", functionTimeout[fn])
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run invoke: %v", err)
	}
	code := cmd.ProcessState.ExitCode()
	if code != 0 {
		t.Logf("invoke exit %d, stderr:\n%s", code, stderr.String())
	}
	return code, stdout.Bytes()
}

func TestInvokeReceiverEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both functions: skipped with -short")
	}
	srv := moto.Start(t)
	client := sqs.NewFromConfig(srv.AWSConfig(t))
	queueURL := moto.CreateFIFO(t, client, "buildkite-sqibs-events.fifo")
	invokeBin, receiverBin, _ := binaries(t)
	env := envFileWith(t, map[string]map[string]string{
		"ReceiverFunction": {"QUEUE_URL": queueURL, "AWS_ENDPOINT_URL_SQS": srv.URL},
	})

	var queued []string // message ids the receiver answered with, in order
	for _, spec := range receiverSpecs {
		t.Run(spec.file, func(t *testing.T) {
			code, out := invoke(t, invokeBin, receiverBin, "receiver", spec.file, env)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stdout %s", code, out)
			}
			var resp events.LambdaFunctionURLResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatalf("stdout is not a function URL response: %v\n%s", err, out)
			}
			want := receiverWants[spec.file]
			want.check(t, resp.StatusCode, resp.Body)
			if want.queued {
				queued = append(queued, queuedID(t, resp.Body))
			}
		})
	}

	// The queue holds exactly what the receiver said it queued, in order,
	// in the incident's group, as v1 envelopes.
	msgs := moto.Drain(t, client, queueURL)
	var got []string
	for _, m := range msgs {
		got = append(got, aws.ToString(m.MessageId))
		if g := m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]; g != "acme/deploy-api/main" {
			t.Errorf("message %s in group %q, want acme/deploy-api/main", aws.ToString(m.MessageId), g)
		}
		if _, err := queue.Decode([]byte(aws.ToString(m.Body))); err != nil {
			t.Errorf("message %s: %v", aws.ToString(m.MessageId), err)
		}
	}
	if !slices.Equal(got, queued) {
		t.Errorf("queue holds %v, the receiver answered %v", got, queued)
	}
}

func TestInvokeDispatcherEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both functions: skipped with -short")
	}
	srv := moto.Start(t)
	client := sqs.NewFromConfig(srv.AWSConfig(t))
	dlqURL := moto.CreateFIFO(t, client, "buildkite-sqibs-dead-letter.fifo")
	invokeBin, _, dispatcherBin := binaries(t)

	sec, err := envSection("DispatcherFunction")
	if err != nil {
		t.Fatal(err)
	}
	sim := sqibssim.New(sec["SQIBS_API_TOKEN"])
	hs := newSimServer(t, sim)
	env := envFileWith(t, map[string]map[string]string{
		"DispatcherFunction": {"SQIBS_URL": hs + "/v1/process", "DLQ_URL": dlqURL, "AWS_ENDPOINT_URL_SQS": srv.URL},
	})

	for _, s := range sqsSpecs {
		t.Run(s.file, func(t *testing.T) {
			sim.Reset()
			var ev events.SQSEvent
			readEvent(t, s.file, &ev)
			code, out := invoke(t, invokeBin, dispatcherBin, "dispatcher", s.file, env)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stdout %s", code, out)
			}
			var resp events.SQSEventResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatalf("stdout is not an SQS batch response: %v\n%s", err, out)
			}
			if len(resp.BatchItemFailures) != 0 {
				t.Errorf("batchItemFailures %+v, want none", resp.BatchItemFailures)
			}
			var dl []deadLetter
			for _, m := range moto.Drain(t, client, dlqURL) {
				reason := ""
				if a, ok := m.MessageAttributes["reason"]; ok {
					reason = aws.ToString(a.StringValue)
				}
				orig := ""
				if a, ok := m.MessageAttributes["original_message_id"]; ok {
					orig = aws.ToString(a.StringValue)
				}
				dl = append(dl, deadLetter{id: orig, group: m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)],
					body: aws.ToString(m.Body), reason: reason})
			}
			dispatcherWants[s.file](t, ev, sim, dl)
		})
	}
}

// newSimServer serves sim over HTTPS on a loopback port, as SQIBS is served,
// and makes the bootstrap trust its certificate (SSL_CERT_FILE, which Go
// reads on Linux): the deployed build must reach SQIBS over TLS.
func newSimServer(t *testing.T, sim *sqibssim.Server) string {
	t.Helper()
	hs := httptest.NewTLSServer(sim)
	t.Cleanup(func() { sim.Close(); hs.Close() })
	certFile := filepath.Join(t.TempDir(), "sqibs.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", certFile)
	return hs.URL
}

// As a new user runs it: `make invoke` with no AWS credentials in the
// shell still starts the function (Lambda always provides credentials, so
// the runner provides placeholders), and events that need no AWS call work.
func TestInvokeWithoutAWSCredentials(t *testing.T) {
	invokeBin, receiverBin, _ := binaries(t)
	for _, name := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(name, "")
	}
	code, out := invoke(t, invokeBin, receiverBin, "receiver", "receiver-ping.json", filepath.Join(eventsDir, "env.json"))
	if code != 0 || !strings.Contains(string(out), `pong`) {
		t.Errorf("exit %d, response %s", code, out)
	}
}
