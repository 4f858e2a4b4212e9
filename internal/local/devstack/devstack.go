// Package devstack wires the whole bridge on one machine (DESIGN §6): the
// receiver's HTTP endpoint, a queue (in-process FIFO, or SQS when QUEUE_URL
// is set), the dispatcher fed by a poller as Lambda's event source mapping
// would, SQIBS (the simulator unless SQIBS_URL is set), Buildkite's REST API
// (a simulator fed with the webhooks received, unless BUILDKITE_API_URL is
// set) for the dispatcher's enrichment, and the reconciler every
// RECONCILE_EVERY. The same handlers as the Lambda functions run; only the
// plumbing differs.
// scripts/devserver (make dev) and the end-to-end tests both use it.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/local/buildkitesim"
	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/local/memstate"
	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/receiver"
	"github.com/callgoose/buildkite-sqibs/internal/reconciler"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

// Defaults of DESIGN §6. They are not secrets: they only exist on a laptop.
const (
	DefaultAddr         = "127.0.0.1:8080"
	DefaultSimAddr      = "127.0.0.1:8081"
	DefaultWebhookToken = "local-webhook-token"
	DefaultSQIBSToken   = "local-sqibs-token"
	// The Buildkite API simulator, started when BUILDKITE_API_URL is unset.
	DefaultBuildkiteSimAddr  = "127.0.0.1:8082"
	DefaultBuildkiteAPIToken = "local-buildkite-token"
	// DefaultReconcileEvery is RECONCILE_EVERY's default (DESIGN §9).
	DefaultReconcileEvery = 10 * time.Minute
)

// Options tune a stack; the zero value is `make dev`.
type Options struct {
	Env    config.Env // variables; nil = none set
	Stdout io.Writer  // the ready line and default-token notices
	Stderr io.Writer  // JSON logs

	Queue       memqueue.Options // the in-process queue (its Log defaults to the stack's)
	BackoffBase time.Duration    // dispatcher retry backoff unit; tests shorten it
	MaxBackoff  time.Duration    // cap of that backoff (default MAX_BACKOFF's); tests shorten it too
	RetryFor    time.Duration    // how long a failing event is retried (default RETRY_FOR's); likewise
	ParentWait  time.Duration    // how long a triggered build waits for its parent's lookup (default the dispatcher's); tests shorten it
	DrainWait   time.Duration    // bound on draining at shutdown; default 10s
	Poller      poller.Options   // batch size, concurrency, waits
	// ReconcileEvery replaces RECONCILE_EVERY (tests shorten it).
	ReconcileEvery time.Duration
}

// Stack is a running bridge.
type Stack struct {
	ReceiverURL string           // http://host:port
	SimURL      string           // SQIBS simulator base URL; "" when SQIBS_URL is used
	Sim         *sqibssim.Server // nil when SQIBS_URL is used
	Queue       *memqueue.Queue  // nil when QUEUE_URL is used
	Dispatcher  *dispatcher.Handler
	State       StateStore // the in-process store, or DynamoDB when STATE_TABLE is set
	Log         *slog.Logger
	// Buildkite is the Buildkite API simulator, nil when BUILDKITE_API_URL
	// is set; BuildkiteURL is its base URL (what BUILDKITE_API_URL would be).
	Buildkite    *buildkitesim.Server
	BuildkiteURL string
	// Reconciler is nil when the Buildkite API is off (BUILDKITE_API_URL set
	// without a token) or RECONCILE_EVERY is off.
	Reconciler *reconciler.Lambda

	recvSrv, simSrv, bkSrv *http.Server
	reconcileStop          context.CancelFunc
	reconcileDone          chan struct{}
	drainWait              time.Duration
	closeOnce              sync.Once
	stdout                 io.Writer

	// The dispatcher's poller, kept so it can be stopped and restarted
	// (control.go).
	pollMu   sync.Mutex
	poll     *pollRun // nil when stopped
	pollBase context.Context
	pollSrc  poller.Source
	pollOpts poller.Options
	closed   bool // Shutdown began: no restart
}

// StateStore is the dispatcher's incident state, which can also list the
// open incidents (*memstate.Store, *dynamo.Store).
type StateStore interface {
	dispatcher.Store
	ListOpen(ctx context.Context) ([]state.Item, error)
}

// Start brings the stack up and returns once the receiver is listening.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.Env == nil {
		o.Env = config.Map(nil)
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.DrainWait <= 0 {
		o.DrainWait = 10 * time.Second
	}
	log := app.NewLogger(o.Stderr)
	// One emitter per function, as in Lambda, so a metric says whose it is.
	emitter := func(fn string) *metrics.Emitter { return metrics.New(o.Stderr, fn) }
	s := &Stack{Log: log, drainWait: o.DrainWait, stdout: o.Stdout}

	env := config.NewReader(o.Env)
	addr := env.String("DEV_ADDR", DefaultAddr)
	simAddr := env.String("SQIBS_SIM_ADDR", DefaultSimAddr)
	queueURL := env.String("QUEUE_URL", "")
	sqibsURL := env.String("SQIBS_URL", "")
	ttl := secret.LoadTTL(env)
	apiURL := env.String(buildkiteapi.URLVar, "")
	bkSimAddr := env.String("BUILDKITE_SIM_ADDR", DefaultBuildkiteSimAddr)
	every := reconcileEvery(env, o.ReconcileEvery)
	stateTable := env.String("STATE_TABLE", "")
	if err := env.Err(); err != nil {
		return nil, err
	}

	// The full loader here: on a laptop, profiles and SSO matter. Loaded
	// once, and only when a secret or queue needs it.
	awsConfig := sync.OnceValues(func() (aws.Config, error) { return awsconfig.LoadDefaultConfig(ctx) })

	// Tokens: configured (literal or secret), else the printed defaults.
	token := func(what string, spec app.TokenSpec, def string) (*secret.Source, error) {
		src, err := app.Token(env, spec, ttl, awsConfig, log)
		if err != nil || src != nil {
			return src, err
		}
		fmt.Fprintf(o.Stdout, "%s: %s (default; set %s or %s to change)\n", what, def, spec.LiteralVar, spec.ARNVar)
		return secret.Literal(def), nil
	}
	webhookTokens, err := token("webhook token", app.WebhookTokenVars, DefaultWebhookToken)
	if err != nil {
		return nil, err
	}
	sqibsTokens, err := token("SQIBS token", app.SQIBSTokenVars, DefaultSQIBSToken)
	if err != nil {
		return nil, err
	}

	// SQIBS: the simulator unless a real endpoint is configured.
	if sqibsURL == "" {
		simToken, err := sqibsTokens.Get(ctx)
		if err != nil {
			return nil, fmt.Errorf("SQIBS token for the simulator: %w", err)
		}
		s.Sim = sqibssim.New(simToken)
		ln, err := net.Listen("tcp", simAddr)
		if err != nil {
			return nil, fmt.Errorf("SQIBS simulator on SQIBS_SIM_ADDR=%s: %w", simAddr, err)
		}
		s.SimURL = "http://" + ln.Addr().String()
		s.simSrv = &http.Server{Handler: s.Sim, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = s.simSrv.Serve(ln) }()
		sqibsURL = s.SimURL + "/v1/process"
		deadLetters := "" // only the in-process queue's are shown
		if queueURL == "" {
			deadLetters = ", dead letters: " + s.SimURL + "/dead-letters"
		}
		fmt.Fprintf(o.Stdout, "SQIBS simulator on %s (incidents: %s/ and %s/incidents%s)\n", s.SimURL, s.SimURL, s.SimURL, deadLetters)
	}
	// Buildkite's API: the simulator unless a real (or other) API is named.
	// Its token, like the others, is the configured one or a printed default;
	// with BUILDKITE_API_URL and no token the API is off, as in Lambda.
	var bkTokens *secret.Source
	if apiURL == "" { // the simulator: a configured token or the printed default
		bkTokens, err = token("Buildkite API token", app.BuildkiteAPITokenVars, DefaultBuildkiteAPIToken)
	} else {
		bkTokens, err = app.Token(env, app.BuildkiteAPITokenVars, ttl, awsConfig, log)
	}
	if err != nil {
		s.closeServers()
		return nil, err
	}
	if apiURL == "" {
		tok, err := bkTokens.Get(ctx)
		if err != nil {
			s.closeServers()
			return nil, fmt.Errorf("Buildkite API token for the simulator: %w", err)
		}
		s.Buildkite = buildkitesim.New(tok)
		ln, err := net.Listen("tcp", bkSimAddr)
		if err != nil {
			s.closeServers()
			return nil, fmt.Errorf("Buildkite API simulator on BUILDKITE_SIM_ADDR=%s: %w", bkSimAddr, err)
		}
		s.BuildkiteURL = "http://" + ln.Addr().String() + "/v2"
		s.bkSrv = &http.Server{Handler: s.Buildkite, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = s.bkSrv.Serve(ln) }()
		apiURL = s.BuildkiteURL
		fmt.Fprintf(o.Stdout, "Buildkite API simulator on %s (BUILDKITE_API_URL; it learns builds from the webhooks received)\n", s.BuildkiteURL)
	}
	var api *buildkiteapi.Client
	if bkTokens != nil {
		if api, err = buildkiteapi.New(buildkiteapi.Config{BaseURL: apiURL}, buildkiteapi.GuardPlaceholder(bkTokens), nil); err != nil {
			s.closeServers()
			return nil, err
		}
	} else {
		log.Info("BUILDKITE_API_URL is set but no Buildkite API token: enrichment, parent builds and the reconciler are off")
	}

	// Queue: in process, or SQS with a poller.
	var pub queue.Publisher
	var src poller.Source
	var vis dispatcher.Visibility
	var dlq dispatcher.DeadLetters
	if queueURL == "" {
		if o.Queue.Log == nil {
			o.Queue.Log = log
		}
		s.Queue = memqueue.New(o.Queue)
		pub, src, vis, dlq = s.Queue, s.Queue, s.Queue, s.Queue
		if s.Sim != nil {
			s.Sim.SetDeadLetters(s.DeadLetters)
		}
	} else {
		cfg, err := awsConfig()
		if err != nil {
			s.closeServers()
			return nil, err
		}
		c := app.SQSClient(cfg, queue.SQSOptions)
		attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl: aws.String(queueURL), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn, types.QueueAttributeNameVisibilityTimeout},
		})
		if err != nil {
			s.closeServers()
			return nil, fmt.Errorf("QUEUE_URL=%s: %w", queueURL, err)
		}
		arn := attrs.Attributes[string(types.QueueAttributeNameQueueArn)]
		// pub stays nil: the receiver and the reconciler build their SQS
		// publishers from QUEUE_URL, as in Lambda.
		plain := app.SQSClient(cfg) // the SDK's own retries: not on the webhook path
		sqsSrc := poller.NewSQSSource(plain, queueURL, arn)
		if secs, err := strconv.Atoi(attrs.Attributes[string(types.QueueAttributeNameVisibilityTimeout)]); err == nil {
			sqsSrc.Visibility = time.Duration(secs) * time.Second // how long a failed delete may be retried
		}
		src = sqsSrc // the retry delays and dead letters: SQS's, wired from the environment
	}

	// Incident state: DynamoDB when STATE_TABLE names a table
	// (AWS_ENDPOINT_URL_DYNAMODB reaches moto), else in process.
	if stateTable != "" {
		cfg, err := awsConfig()
		if err != nil {
			s.closeServers()
			return nil, err
		}
		s.State = dynamo.FromConfig(cfg, stateTable)
		log.Info("incident state in DynamoDB", "table", stateTable)
	} else {
		s.State = memstate.New()
		log.Info("STATE_TABLE is not set: incident state is kept in process and lost at exit")
	}
	base := func(fn string) app.Base { return app.Base{AWS: awsConfig, Log: log, Metrics: emitter(fn)} }
	s.Dispatcher, err = dispatcher.FromEnv(overlay(o.Env, map[string]string{"SQIBS_URL": sqibsURL}), dispatcher.Deps{
		Base: base("dispatcher"), SQIBSTokens: sqibsTokens, API: api, Visibility: vis, DeadLetters: dlq, State: s.State,
		Tune: func(c *dispatcher.Config) {
			if o.BackoffBase > 0 {
				c.BackoffBase = o.BackoffBase
			}
			if o.MaxBackoff > 0 {
				c.MaxBackoff = o.MaxBackoff
			}
			if o.RetryFor > 0 {
				c.RetryFor = o.RetryFor
			}
			if o.ParentWait > 0 {
				c.ParentWait = o.ParentWait
			}
		},
	})
	if err != nil {
		s.closeServers()
		return nil, err
	}
	po := o.Poller
	if po.Log == nil {
		po.Log = log
	}
	if po.InvokeTimeout <= 0 && api != nil {
		// The template's dispatcher timeout with the API: 2 s more.
		po.InvokeTimeout = poller.DefaultInvokeTimeout + dispatcher.APIBudget
	}
	if po.FunctionName == "" {
		po.FunctionName = "dispatcher"
	}
	s.pollBase, s.pollSrc, s.pollOpts = context.WithoutCancel(ctx), src, po
	if err := s.StartDispatcher(); err != nil {
		s.closeServers()
		return nil, err
	}

	rh, err := receiver.FromEnv(o.Env, receiver.Deps{Base: base("receiver"), Tokens: webhookTokens, Publisher: pub, BuildkiteAPI: api != nil})
	if err != nil {
		_ = s.StopDispatcher(ctx)
		s.closeServers()
		return nil, err
	}
	if s.Buildkite != nil {
		// Every authenticated webhook, before the rules drop any: the jobs
		// of a build are known even with JOB_INCIDENTS=false.
		rh.Observe(s.Buildkite.Record)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = s.StopDispatcher(ctx)
		s.closeServers()
		return nil, fmt.Errorf("receiver on DEV_ADDR=%s: %w", addr, err)
	}
	if api != nil && every > 0 {
		if s.Reconciler, err = reconciler.FromEnv(o.Env, reconciler.Deps{Base: base("reconciler"), API: api, State: s.State, Publisher: pub}); err != nil {
			_ = s.StopDispatcher(ctx)
			s.closeServers()
			return nil, err
		}
		s.startReconciler(context.WithoutCancel(ctx), every)
		fmt.Fprintf(o.Stdout, "reconciler every %s (RECONCILE_EVERY; against this stack's incident state and queue)\n", shortDuration(every))
	}
	s.ReceiverURL = "http://" + ln.Addr().String()
	s.recvSrv = &http.Server{Handler: rh.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.recvSrv.Serve(ln) }()
	fmt.Fprintf(o.Stdout, "receiver listening on %s\n", s.ReceiverURL)
	return s, nil
}

// Shutdown stops taking webhooks, lets the in-process queue drain (bounded
// by DrainWait), then stops the poller after its batch in hand and the
// simulator, and reports what the in-process queue still holds (logged
// one by one, counted on Stdout) and its dead letters.
// With SQS, what is still queued stays there for next time.
func (s *Stack) Shutdown(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.pollMu.Lock()
		s.closed = true // no StartDispatcher from here on
		s.pollMu.Unlock()
		if s.recvSrv != nil {
			err = s.recvSrv.Shutdown(ctx)
		}
		// Before the drain: no resolve is queued behind it.
		s.stopReconciler()
		if s.Queue != nil && s.DispatcherRunning() { // nothing drains a stopped dispatcher
			dctx, cancel := context.WithTimeout(ctx, s.drainWait)
			for {
				st := s.Queue.Stats()
				if st.Visible == 0 && st.InFlight == 0 {
					break
				}
				select {
				case <-dctx.Done():
					s.Log.Warn("shutdown: queue not drained in time", "visible", st.Visible, "in_flight", st.InFlight)
				case <-time.After(20 * time.Millisecond):
					continue
				}
				break
			}
			cancel()
		}
		if perr := s.StopDispatcher(ctx); perr != nil {
			s.Log.Warn("shutdown: dispatcher still busy", "error", perr.Error())
		}
		if s.Queue != nil {
			s.Queue.Close()
			s.reportLeft(s.Queue.Left())
			printDeadLetters(s.stdout, s.DeadLetters())
		}
		s.closeServers()
	})
	return err
}

func (s *Stack) closeServers() {
	if s.Sim != nil {
		s.Sim.Close() // release hung requests first, or Shutdown waits for them
	}
	if s.Buildkite != nil {
		s.Buildkite.Close()
	}
	for _, srv := range []*http.Server{s.simSrv, s.bkSrv} {
		if srv == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = srv.Close()
		}
		cancel()
	}
}

// overlay returns env with some names set, for defaults that depend on
// what the stack started (the simulator's URL).
func overlay(env config.Env, set map[string]string) config.Env {
	return func(name string) (string, bool) {
		if v, ok := env(name); ok && v != "" {
			return v, true
		}
		v, ok := set[name]
		return v, ok
	}
}
