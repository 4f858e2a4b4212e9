package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/enrich"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

// BuildkiteAPI is what the dispatcher asks Buildkite's REST API (DESIGN §9):
// a failed build's jobs, and a triggered build's parent.
// *buildkiteapi.Client satisfies it.
type BuildkiteAPI interface {
	enrich.Jobs
	enrich.Builds
}

// APIBudget is the most the Buildkite API adds to one delivery: the parent
// lookup of a triggered build and the failed-jobs lookup of a failed one,
// each bounded by enrich.Budget (the API token's fetch included, since the
// secret source honours the context). DeliveryBudget adds it when the API
// is on, so the extra seconds come out of the invocation's time, never out
// of the SQIBS request's.
const APIBudget = 2 * enrich.Budget

// parentCacheSize bounds the parents remembered: a triggered build sends
// build.failing, build.finished and job events, all judged by one parent,
// whose branch and pull request never change.
const parentCacheSize = 512

// parents remembers the judge of parent builds already looked up.
type parents struct {
	mu sync.Mutex
	m  map[string]incident.Judge
}

func (c *parents) get(k string) (incident.Judge, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.m[k]
	return j, ok
}

func (c *parents) put(k string, j incident.Judge) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= parentCacheSize {
		c.m = make(map[string]incident.Judge) // wholesale: a miss costs one call
	}
	c.m[k] = j
}

// DefaultParentWait is how long a triggered build whose parent cannot be looked
// up is retried before it is judged by its own branch. Judged at once, a
// child of a pull-request build that runs on main would page for nothing
// during an API hiccup (a 429 shared with the reconciler, a slow answer),
// and its later pass, judged by its parent, would never resolve that page.
// Five minutes rides out a rate-limit window; a real failure of such a
// child pages at most this late while the API is down.
const DefaultParentWait = 5 * time.Minute

// errParentUnknown marks a triggered build whose parent could not be
// looked up.
var errParentUnknown = errors.New("parent build not looked up")

// retryableLookup reports whether a failed parent lookup may pass when
// tried again: rate limited, slow, or Buildkite unavailable.
func retryableLookup(err error) bool {
	switch buildkiteapi.Class(err) {
	case "rate_limited", "timeout", "unavailable":
		return true
	}
	return false
}

// judge returns what p's branch and pull request are judged by: for a
// triggered build with the API, its parent build's (enrich.Parent); else
// p's own, as without the API (nil). When the parent cannot be looked up
// it returns errParentUnknown (wrapping the cause), counted: the caller
// retries the event for ParentWait, then judges it by its own branch.
func (h *Handler) judge(ctx context.Context, p *buildkite.Payload, log *slog.Logger) (*incident.Judge, error) {
	if h.cfg.API == nil || !incident.Triggered(p.Build) {
		return nil, nil
	}
	org := p.OrgSlug()
	tf := p.Build.TriggeredFrom
	key := org + "/" + tf.BuildPipelineSlug + "/" + strconv.FormatInt(tf.BuildNumber, 10)
	if j, ok := h.parents.get(key); ok {
		return &j, nil
	}
	if org == "" {
		return nil, nil // no organization in the payload's URLs: nothing to ask
	}
	start := h.now()
	o, ok, err := enrich.Parent(ctx, h.cfg.API, org, p.Build)
	if err != nil {
		h.metrics.Count(metrics.ParentUnknown)
		log.Warn("parent build not looked up",
			"parent_pipeline", tf.BuildPipelineSlug, "parent_build", tf.BuildNumber,
			"error_class", buildkiteapi.Class(err), "api_ms", h.now().Sub(start).Milliseconds())
		return nil, fmt.Errorf("%w: %w", errParentUnknown, err)
	}
	if !ok {
		return nil, nil
	}
	j := incident.Judge{Branch: o.Branch, DefaultBranch: o.DefaultBranch, PullRequest: o.PullRequest, Parent: true}
	h.parents.put(key, j)
	log.Debug("triggered build judged by its parent", "parent_pipeline", o.Pipeline, "parent_build", o.Number,
		"parent_pull_request", o.PullRequest, "hops", o.Hops)
	return &j, nil
}

// addFailedJobs names a failed build's failed jobs in its incident
// (failed_jobs and the description), spending at most enrich.Budget. On any
// error the incident goes as it is: the page is never held back, only
// counted (enrichment_skipped) and logged with the error's class.
func (h *Handler) addFailedJobs(ctx context.Context, p *buildkite.Payload, pl *incident.Payload, d incident.Decision, env *queue.Envelope, log *slog.Logger) {
	if h.cfg.API == nil || d.Job || d.Status != incident.StatusFailed || env.Origin != "" || p.Build == nil || p.Build.Number <= 0 {
		return
	}
	org := p.OrgSlug()
	if org == "" {
		return
	}
	start := h.now()
	f, err := enrich.FailedJobs(ctx, h.cfg.API, org, pl.Event.Pipeline, p.Build.Number)
	took := h.now().Sub(start)
	if err != nil {
		h.metrics.Count(metrics.EnrichmentSkipped)
		log.Warn("failed jobs not added: the incident is sent without them",
			"error_class", buildkiteapi.Class(err), "error", err.Error(), "api_ms", took.Milliseconds())
		return
	}
	h.metrics.Count(metrics.Enriched)
	if len(f.Jobs) == 0 {
		return
	}
	pl.Event.FailedJobs = f.Jobs
	pl.Event.Description = f.Describe(pl.Event.Description)
	log.Debug("failed jobs added", "failed_jobs", f.Total, "api_ms", took.Milliseconds())
}

// describeOrigin rewrites the description of a resolve no webhook sent:
// it says who resolved the incident and why, in the envelope's reason (a
// fixed phrase of the reconciler's, bounded here all the same, as it comes
// from the queue).
func describeOrigin(pl *incident.Payload, env *queue.Envelope) {
	if env.Origin == "" {
		return
	}
	e := &pl.Event
	e.Origin = env.Origin
	if e.Status != incident.StatusPassed && e.Status != incident.StatusFixed {
		return
	}
	e.Description = e.Pipeline + " resolved on " + e.Branch + " by the " + e.Origin
	if r := env.Reason; r != "" {
		e.Description += ": " + r
	}
}
