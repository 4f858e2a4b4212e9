// Package reconciler resolves incidents whose closing webhook never came
// (DESIGN §9). Buildkite has lost and delayed webhooks; a lost
// `build.finished passed` would leave an incident open for ever. On a
// schedule, the reconciler takes the open incidents from the state store,
// asks Buildkite for the newest finished build of each branch and, when that
// build passed and is newer than the failure, queues a resolve through the
// same FIFO queue as the webhooks, so the state store's order rules judge it
// like any webhook. A pipeline, or a branch's failed build, that Buildkite
// answers 404 for resolves too, with that reason.
//
// Only build incidents (<org>/<pipeline>/<branch>) are reconciled. Job
// incidents (…#<step>) are skipped: the dispatcher maps a build.finished to
// the build incident, and resolving a step means a job.finished per job of
// the step from a second call (BuildWithJobs), which the state store must
// then match job by job; until then they resolve with their next webhook.
//
// The run stays inside Buildkite's REST rate limit (200 requests a minute
// per organization, 50 per user: the token is one user): calls are made one
// at a time, at most Options.Budget of them per run, and a 429 is waited out
// only when its RateLimit-Reset is near (Options.MaxWait), else the run stops
// and leaves the rest for the next one. It ends by its deadline and logs one
// summary line.
package reconciler

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/lambdalog"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/state"
)

// Incident is one open incident as the state store knows it.
type Incident struct {
	ID  string // the incident id (DESIGN §5), also the FIFO group
	Org string
	// Pipeline is the pipeline's current slug, asked about; Slug the one
	// in the id (they differ once a pipeline renamed while red sent an
	// event under its new slug; "" = the same).
	Pipeline, Slug string
	Branch         string
	// FailedBuild is the order number of the failure: the build number, or
	// for a rebuild the number it rebuilt (DESIGN §5b); 0 when unknown.
	FailedBuild int64
	FailedAt    time.Time // the failure event's own time
	// Rebuilds are the state's recent rebuilds (number → the original
	// build of its chain), so a rebuild of a rebuild orders as the state
	// orders it.
	Rebuilds map[string]int64
}

// OpenIncidents lists the incidents that are open (the state table).
type OpenIncidents interface {
	OpenIncidents(ctx context.Context) ([]Incident, error)
}

// Builds is what the reconciler asks Buildkite (satisfied by
// *buildkiteapi.Client).
type Builds interface {
	FinishedBuilds(ctx context.Context, org, pipeline, branch string, n int) ([]buildkiteapi.Build, error)
	Build(ctx context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error)
}

// Orgs confirms a token can read an organization before a 404 inside it is
// believed (satisfied by *buildkiteapi.Client).
type Orgs interface {
	CheckOrg(ctx context.Context, org string) error
}

// Reasons carried in the envelope's reason (queue.Note): fixed phrases for
// the incident description, never caller data.
const (
	ReasonPassed       = "a newer build passed; its webhook was not received"
	ReasonPipelineGone = "Buildkite no longer knows this pipeline (404)"
	ReasonBuildGone    = "Buildkite no longer knows the failed build of this branch (404)"
)

// RequestIDPrefix starts the request_id of every message the reconciler
// queues, followed by the run id.
const RequestIDPrefix = "reconciler-"

// Defaults of Options.
const (
	DefaultBudget   = 25 // calls per run: half the per-user minute, leaving the rest to enrichment
	DefaultTimeout  = time.Minute
	DefaultPerPage  = 3
	DefaultMaxWait  = 5 * time.Second
	publishReserve  = 2 * time.Second // kept at the end of a run for the last publish
	maxErrorMessage = 300
)

// Options tune a Reconciler; the zero value is the defaults.
type Options struct {
	Budget  int           // most API calls per run
	Timeout time.Duration // run length when Run gets no deadline
	PerPage int           // builds listed per branch: a blocked newest build must not hide the answer
	// PullRequests is ALERT_PULL_REQUESTS: only then does a pull-request
	// build of the branch (a fork's PR named main) say what the branch is.
	PullRequests bool
	MaxWait      time.Duration // longest RateLimit-Reset waited out inside a run
	Log          *slog.Logger  // the summary line; nil = discard
	Now          func() time.Time
	// Shuffle orders the incidents of a run (default: random), so that
	// with more open incidents than Budget every one is reached in turn.
	Shuffle func(n int, swap func(i, j int))
	// Sleep waits out a near RateLimit-Reset (default: a timer, ending with ctx).
	Sleep func(ctx context.Context, d time.Duration) error
}

// Reconciler is safe for one Run at a time.
type Reconciler struct {
	open   OpenIncidents
	builds Builds
	orgs   Orgs
	pub    queue.Publisher
	o      Options
}

// New builds a Reconciler.
func New(open OpenIncidents, builds Builds, orgs Orgs, pub queue.Publisher, o Options) *Reconciler {
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.PerPage <= 0 {
		o.PerPage = DefaultPerPage
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Shuffle == nil {
		o.Shuffle = rand.Shuffle
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	return &Reconciler{open: open, builds: builds, orgs: orgs, pub: pub, o: o}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Summary is what one run did; it is also the summary line's fields.
// Checked = Resolved + NotFound + StillFailing + Errors.
type Summary struct {
	Checked      int // incidents Buildkite was asked about
	Resolved     int // resolves queued: a newer build passed
	NotFound     int // resolves queued: Buildkite answered 404
	StillFailing int // the newest finished build failed, or none is newer yet
	Errors       int // API answers other than 404/429, refused 404s, publish failures
	RateLimited  int // 429s met (answered or refused locally)
	Skipped      int // job incidents, and entries whose id does not match their fields
	Unchecked    int // left for the next run: budget, deadline or rate limit
	Calls        int // API requests made
	FirstError   string
	Duration     time.Duration
}

// errStop ends a run early: the rest is left for the next run.
var errStop = errors.New("stop")

// run is the state of one Run.
type run struct {
	r        *Reconciler
	ctx      context.Context // the invocation's: its log attributes (lambdalog)
	id       string
	deadline time.Time
	reserve  time.Duration // kept at the end for publishing the last resolve
	s        Summary
	orgOK    map[string]error // CheckOrg's answer, once per org and run
}

// Run reconciles once and logs its summary line. runID (the invocation's
// request id) goes into every queued message's request_id. It stops taking
// new incidents once deadline (zero: Options.Timeout from now) is near, and
// returns an error only when the open incidents could not be listed.
func (r *Reconciler) Run(ctx context.Context, runID string, deadline time.Time) (Summary, error) {
	start := r.o.Now()
	if deadline.IsZero() {
		deadline = start.Add(r.o.Timeout)
	}
	// The context's deadline is in the machine's time; the run's checks use
	// Options.Now, so that tests can move it.
	ctx, cancel := context.WithTimeout(ctx, deadline.Sub(start))
	defer cancel()
	st := &run{r: r, ctx: ctx, id: runID, deadline: deadline, orgOK: map[string]error{},
		reserve: min(publishReserve, deadline.Sub(start)/5)}

	list, err := r.open.OpenIncidents(ctx)
	if err != nil {
		err = fmt.Errorf("reconciler: list open incidents: %w", err)
		st.s.Errors++
		st.note(err)
	} else {
		r.o.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
		for i := range list {
			if st.reconcile(ctx, &list[i]) == errStop {
				st.s.Unchecked += len(list) - i
				break
			}
		}
	}
	st.s.Duration = r.o.Now().Sub(start)
	st.log()
	return st.s, err
}

// reconcile checks one incident; errStop means it was not checked and the
// run is over.
func (st *run) reconcile(ctx context.Context, inc *Incident) error {
	key := inc.Org + "/" + cmp.Or(inc.Slug, inc.Pipeline) + "/" + inc.Branch
	if inc.ID != key || inc.Org == "" || inc.Pipeline == "" || inc.Branch == "" {
		st.s.Skipped++ // a job incident (key#step), or an entry that does not add up
		return nil
	}
	out, err := st.check(ctx, inc)
	if err == errStop {
		return err
	}
	st.s.Checked++
	switch {
	case err != nil:
		st.s.Errors++
		st.note(err)
	case out == outResolved:
		st.s.Resolved++
	case out == outNotFound:
		st.s.NotFound++
	default:
		st.s.StillFailing++
	}
	st.r.o.Log.Debug("reconcile incident", "incident", inc.ID, "outcome", out.String(), "error_class", buildkiteapi.Class(err))
	return nil
}

type outcome int

const (
	outStillFailing outcome = iota
	outResolved
	outNotFound
)

func (o outcome) String() string {
	return [...]string{"still_failing", "resolved", "not_found"}[o]
}

func (st *run) check(ctx context.Context, inc *Incident) (outcome, error) {
	var list []buildkiteapi.Build
	err := st.call(ctx, inc.Org, func(ctx context.Context) (err error) {
		list, err = st.r.builds.FinishedBuilds(ctx, inc.Org, inc.Pipeline, inc.Branch, st.r.o.PerPage)
		return err
	})
	if errors.Is(err, buildkiteapi.ErrNotFound) {
		return st.gone(ctx, inc, ReasonPipelineGone, err)
	}
	if err != nil {
		return 0, err
	}
	if len(list) == 0 {
		// No finished build on the branch: still running, or Buildkite
		// has forgotten the branch's builds. The failed build says which.
		if inc.FailedBuild <= 0 {
			return outStillFailing, nil
		}
		err := st.call(ctx, inc.Org, func(ctx context.Context) error {
			_, err := st.r.builds.Build(ctx, inc.Org, inc.Pipeline, inc.FailedBuild)
			return err
		})
		if errors.Is(err, buildkiteapi.ErrNotFound) {
			return st.gone(ctx, inc, ReasonBuildGone, err)
		}
		return outStillFailing, err
	}
	// The newest build the rules would judge: a pull-request build on
	// the branch (a fork's PR named main) would resolve nothing if it
	// passed, and hide a real pass if it failed.
	var b *buildkiteapi.Build
	for i := range list {
		if st.r.o.PullRequests || !list[i].Build.IsPullRequest() {
			b = &list[i]
			break
		}
	}
	if b == nil || b.State != "passed" || !newer(b, inc) {
		return outStillFailing, nil
	}
	p := b.Payload("build.finished")
	id := incident.BuildID(p, p.PipelineSlug(), p.Build.Branch)
	renamed := inc.Slug != "" && inc.Slug != inc.Pipeline && id == inc.Org+"/"+inc.Pipeline+"/"+inc.Branch
	if id != inc.ID && !renamed {
		return 0, fmt.Errorf("reconciler: build #%d maps to incident %q, not %q", b.Number, clip(id), inc.ID)
	}
	// A renamed pipeline's resolve goes in its new id's group, in order
	// with its webhooks; the dispatcher's alias takes it to the incident
	// the old slug opened.
	return outResolved, st.publishTo(ctx, id, inc, p, ReasonPassed, queue.DedupID(p))
}

// newer reports whether b comes after the failure in the state store's
// order (state.OrderNumber: a rebuild counts as the original build of its
// chain), then the event's own time.
func newer(b *buildkiteapi.Build, inc *Incident) bool {
	var rebuiltFrom int64
	if b.RebuiltFrom != nil {
		rebuiltFrom = b.RebuiltFrom.Number
	}
	at := state.Order{Build: state.OrderNumber(b.Number, rebuiltFrom, inc.Rebuilds), At: b.FinishedAt.Time}
	return at.Compare(state.Order{Build: inc.FailedBuild, At: inc.FailedAt}) > 0
}

// gone resolves an incident Buildkite answered 404 for, once the token is
// shown to read the organization: a token for the wrong organization (or
// a mistyped org slug) gets 404s for everything, and must not resolve every
// incident.
func (st *run) gone(ctx context.Context, inc *Incident, reason string, notFound error) (outcome, error) {
	checked, ok := st.orgOK[inc.Org]
	if !ok {
		checked = st.call(ctx, inc.Org, func(ctx context.Context) error { return st.r.orgs.CheckOrg(ctx, inc.Org) })
		if checked == errStop {
			return 0, errStop
		}
		st.orgOK[inc.Org] = checked
	}
	if checked != nil {
		return 0, fmt.Errorf("reconciler: 404 not believed, the token cannot read organization %q: %w (%w)", inc.Org, checked, notFound)
	}
	// No build to send: one that maps to the same incident and orders after
	// the failure (same number, later time) in the store. Its state is
	// passed so that a dispatcher that does not read the reason still
	// resolves; the reason says what happened.
	now := st.r.o.Now().UTC()
	p := &buildkite.Payload{
		Event: "build.finished",
		Build: &buildkite.Build{
			Number:     inc.FailedBuild,
			State:      "passed",
			Branch:     inc.Branch,
			FinishedAt: buildkite.Time{Time: now},
		},
		// The incident's branch alerted when it opened; the pipeline that
		// could say its default branch is gone. Naming the branch as the
		// default keeps ALERT_BRANCHES=default matching it (without it,
		// "default" means main or master and a develop incident would never
		// resolve).
		Pipeline: &buildkite.Pipeline{Slug: inc.Pipeline, WebURL: "https://buildkite.com/" + inc.Org + "/" + inc.Pipeline, DefaultBranch: inc.Branch},
	}
	h := sha256.Sum256([]byte(queue.OriginReconciler + "\x00" + reason + "\x00" + inc.ID + "\x00" + strconv.FormatInt(inc.FailedBuild, 10)))
	return outNotFound, st.publishTo(ctx, inc.ID, inc, p, reason, hex.EncodeToString(h[:]))
}

func (st *run) publishTo(ctx context.Context, group string, inc *Incident, p *buildkite.Payload, reason, dedup string) error {
	m, err := queue.NewNotedMessage(p, group, RequestIDPrefix+st.id, st.r.o.Now(), queue.Note{Origin: queue.OriginReconciler, Reason: reason})
	if err != nil {
		return fmt.Errorf("reconciler: %w", err)
	}
	m.DedupID = dedup
	if _, err := st.r.pub.Publish(ctx, m); err != nil {
		return fmt.Errorf("reconciler: queue the resolve of %s: %w", inc.ID, err)
	}
	return nil
}

// call makes one API call within the run's budget and deadline. A 429 is
// waited out when its reset is near enough, once; otherwise, and when the
// budget or the time is used up, it returns errStop.
func (st *run) call(ctx context.Context, org string, do func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		if st.s.Calls >= st.r.o.Budget || st.left() <= st.reserve {
			return errStop
		}
		st.s.Calls++
		err := do(ctx)
		var rl *buildkiteapi.RateLimitError
		if !errors.As(err, &rl) {
			if err == nil {
				st.orgOK[org] = nil // the token reads this org: its 404s are believable
			} else if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				return errStop
			}
			return err
		}
		if rl.Local {
			st.s.Calls-- // refused before a request: no call was spent
		}
		st.s.RateLimited++
		wait := rl.Reset.Sub(st.r.o.Now())
		if attempt > 0 || wait > st.r.o.MaxWait || wait >= st.left()-st.reserve {
			st.note(err)
			return errStop
		}
		if st.r.o.Sleep(ctx, max(wait, 0)) != nil {
			return errStop
		}
	}
}

func (st *run) left() time.Duration { return st.deadline.Sub(st.r.o.Now()) }

func (st *run) note(err error) {
	if st.s.FirstError == "" && err != nil {
		st.s.FirstError = clip(err.Error())
	}
}

// log writes the run's one summary line.
func (st *run) log() {
	s := st.s
	level := slog.LevelInfo
	if s.Errors > 0 || s.RateLimited > 0 {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("run_id", clip(st.id)),
		slog.Int("checked", s.Checked), slog.Int("resolved", s.Resolved), slog.Int("still_failing", s.StillFailing),
		slog.Int("not_found", s.NotFound), slog.Int("errors", s.Errors), slog.Int("rate_limited", s.RateLimited),
		slog.Int("skipped", s.Skipped), slog.Int("unchecked", s.Unchecked), slog.Int("calls", s.Calls),
		slog.Int64("duration_ms", s.Duration.Milliseconds()),
	}
	if s.FirstError != "" {
		attrs = append(attrs, slog.String("first_error", s.FirstError))
	}
	if inv, ok := lambdalog.FromContext(st.ctx); ok {
		attrs = append(inv.Attrs(), attrs...)
	}
	st.r.o.Log.LogAttrs(context.Background(), level, "reconcile", attrs...)
}

// clip bounds a string that reaches a log line or an error.
func clip(s string) string { return buildkite.Clip(s, maxErrorMessage) }
