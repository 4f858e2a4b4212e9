package deploytest

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/receiver"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
)

// What each function needs from its environment depends on what it is
// given: a part supplied by the caller (make dev, a test) is never also
// read from the environment, and one left out is, as in Lambda.
func TestWhatEachFunctionNeeds(t *testing.T) {
	q := memqueue.New(memqueue.Options{})
	base := app.Base{AWS: noAWS}
	for _, tc := range []struct {
		name    string
		build   func() error
		wantErr string // "" = builds
	}{
		{"receiver with its queue", func() error {
			_, err := receiver.FromEnv(config.Map(map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "t"}), receiver.Deps{Base: base, Publisher: q})
			return err
		}, ""},
		{"receiver without a queue needs QUEUE_URL", func() error {
			_, err := receiver.FromEnv(config.Map(map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "t"}), receiver.Deps{Base: base})
			return err
		}, "QUEUE_URL is required"},
		{"receiver with QUEUE_URL builds SQS from AWS", func() error {
			_, err := receiver.FromEnv(config.Map(map[string]string{"QUEUE_URL": "https://sqs/q.fifo"}), receiver.Deps{Base: base})
			return err
		}, "no AWS call expected"},
		{"receiver with no token fails closed, not at start", func() error {
			_, err := receiver.FromEnv(config.Map(nil), receiver.Deps{Base: base, Publisher: q})
			return err
		}, ""},
		{"dispatcher with its queue and state", func() error {
			_, err := dispatcher.FromEnv(config.Map(map[string]string{"SQIBS_URL": "https://s/v1/process", "SQIBS_API_TOKEN": "t"}),
				dispatcher.Deps{Base: base, Visibility: q, DeadLetters: q, State: memstate.New()})
			return err
		}, ""},
		{"dispatcher needs an SQIBS token", func() error {
			_, err := dispatcher.FromEnv(config.Map(map[string]string{"SQIBS_URL": "https://s/v1/process"}), dispatcher.Deps{Base: base, Visibility: q})
			return err
		}, "SQIBS_API_TOKEN is required"},
		{"dispatcher with STATE_TABLE reads AWS for it", func() error {
			_, err := dispatcher.FromEnv(config.Map(map[string]string{"SQIBS_URL": "https://s/v1/process", "SQIBS_API_TOKEN": "t", "STATE_TABLE": "x"}),
				dispatcher.Deps{Base: base, Visibility: q, DeadLetters: q})
			return err
		}, "no AWS call expected"},
		{"dispatcher: a bad value names its variable", func() error {
			_, err := dispatcher.FromEnv(config.Map(map[string]string{"SQIBS_URL": "https://s/v1/process", "SQIBS_API_TOKEN": "t", "MAX_BACKOFF": "soon"}),
				dispatcher.Deps{Base: base, Visibility: q})
			return err
		}, "MAX_BACKOFF"},
		{"reconciler needs a Buildkite API token", func() error {
			_, err := reconciler.FromEnv(config.Map(nil), reconciler.Deps{Base: base, State: memstate.New(), Publisher: q})
			return err
		}, "BUILDKITE_API_TOKEN is required"},
		{"reconciler with its state and queue", func() error {
			_, err := reconciler.FromEnv(config.Map(map[string]string{"BUILDKITE_API_TOKEN": "t"}), reconciler.Deps{Base: base, State: memstate.New(), Publisher: q})
			return err
		}, ""},
		{"reconciler without them needs STATE_TABLE and QUEUE_URL", func() error {
			_, err := reconciler.FromEnv(config.Map(map[string]string{"BUILDKITE_API_TOKEN": "t"}), reconciler.Deps{Base: base})
			return err
		}, "STATE_TABLE is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.build()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// A receiver built with a Buildkite API in use leaves triggered builds to
// the dispatcher, as a configured token does.
func TestReceiverDefersTriggeredBuildsWithAnAPI(t *testing.T) {
	q := memqueue.New(memqueue.Options{})
	body := []byte(`{"event":"build.finished","build":{"id":"b","number":2,"state":"failed","branch":"feature","triggered_from":{"build_id":"p","build_number":1,"build_pipeline_slug":"parent"}},"pipeline":{"slug":"child","web_url":"https://buildkite.com/acme/child"}}`)
	for _, api := range []bool{false, true} {
		h, err := receiver.FromEnv(config.Map(map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "tok"}), receiver.Deps{Base: app.Base{AWS: noAWS}, Publisher: q, BuildkiteAPI: api})
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := h.Handle(context.Background(), tokenRequest(body))
		if got := resp.StatusCode == 200; got != api {
			t.Errorf("with an API %v: %d %s", api, resp.StatusCode, resp.Body)
		}
	}
}

func tokenRequest(body []byte) events.LambdaFunctionURLRequest {
	r := events.LambdaFunctionURLRequest{Headers: map[string]string{"x-buildkite-token": "tok", "content-type": "application/json"}, Body: string(body)}
	r.RequestContext.HTTP.Method = "POST"
	return r
}
