package dispatcher

import (
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/secret"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
)

// Settings is the dispatcher's part of DESIGN §2, read once at start.
type Settings struct {
	SQIBS     sqibs.Config
	SecretTTL time.Duration
	DLQURL    string
	// StateTable is STATE_TABLE, the DynamoDB table of incident state;
	// "" keeps none (the wiring fills Handler.State from it).
	StateTable string
	Handler    Config
}

// DeliveryBudget is the longest one delivery can take with SQIBS requests
// bounded by sqibsTimeout, plus the time to report the outcome: a token
// fetch, a request, a refetch of a refused token and the retried request
// (secret.DefaultFetchTimeout bounds each fetch), then FinishTime. The
// handler starts no delivery with less than this left before its deadline.
// With the Buildkite API (api) a delivery may first spend APIBudget on it
// (a parent lookup and the failed jobs, 1 s each): counted in, so that the
// slowest API never shortens the SQIBS request or runs the function out of
// time. It is added only then, so that without a token nothing changes;
// template.yaml raises the dispatcher's timeout by the same 2 s when the
// API is enabled.
func DeliveryBudget(sqibsTimeout time.Duration, api bool) time.Duration {
	b := 2*(secret.DefaultFetchTimeout+sqibsTimeout) + FinishTime
	if api {
		b += APIBudget
	}
	return b
}

// LoadSettings reads the dispatcher settings; check r.Err() after.
func LoadSettings(r *config.Reader) Settings {
	timeout := r.Duration("SQIBS_TIMEOUT", sqibs.DefaultTimeout)
	retryFor := r.Duration("RETRY_FOR", DefaultRetryFor)
	maxBackoff := r.Duration("MAX_BACKOFF", DefaultMaxBackoff)
	rules := incident.LoadRules(r)
	if r.Err() == nil {
		if name, want := checkRetryPolicy(retryFor, maxBackoff, r.Has("RETRY_FOR")); name != "" {
			r.Invalid(name, want)
		}
	}
	return Settings{
		SQIBS: sqibs.Config{
			URL:     r.Required("SQIBS_URL"),
			Auth:    sqibs.Auth(r.OneOf("SQIBS_AUTH", "header", "header", "query")),
			From:    r.Optional("SQIBS_FROM", "Buildkite"),
			Timeout: timeout,
		},
		SecretTTL:  secret.LoadTTL(r),
		DLQURL:     r.String("DLQ_URL", ""),
		StateTable: r.String("STATE_TABLE", ""),
		Handler: Config{
			Rules: rules,
			// TriggeredByParent is "a Buildkite API token is configured":
			// the wiring then fills Handler.API.
			Reserve:    DeliveryBudget(timeout, rules.TriggeredByParent),
			RetryFor:   retryFor,
			MaxBackoff: maxBackoff,
		},
	}
}
