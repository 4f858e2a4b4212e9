// Package state holds the incident state rules of DESIGN §5b: which events
// reach SQIBS once the dispatcher remembers, per incident id, the newest
// event it applied, the consecutive failed builds, and for step incidents
// which of the step's jobs are failing.
//
// Decide is pure (no I/O, no clock of its own): the dispatcher reads the
// stored Item, asks Decide, sends when told to and writes the next Item
// after the send succeeded. Memory is the in-process store; the DynamoDB
// adapter lives in internal/state/dynamo.
//
// State is a guard, not the truth: an absent item means "behave as the
// stateless bridge did", so losing the table can never lose a recovery.
package state

import (
	"cmp"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
)

// TTL is how long an item lives after its last update (DESIGN §5b).
const TTL = 90 * 24 * time.Hour

// ErrConflict means a conditional write lost a race: the item changed
// since it was read. Transient: the event is retried and decided again.
var ErrConflict = errors.New("state: item changed since it was read")

// ErrCorrupt means a stored item could not be read. The dispatcher logs it
// and treats the item as absent; the next write replaces it.
var ErrCorrupt = errors.New("state: stored item is unreadable")

// Order is the position of an event in its incident's history: the build
// number (a rebuild counts as the build it was rebuilt_from), then the
// event's own time.
type Order struct {
	Build int64     `dynamodbav:"build" json:"build"`
	At    time.Time `dynamodbav:"at" json:"at"`
}

// Compare is -1, 0 or +1 as o is older than, the same as, or newer than p.
func (o Order) Compare(p Order) int {
	switch {
	case o.Build < p.Build:
		return -1
	case o.Build > p.Build:
		return 1
	}
	return o.At.Compare(p.At)
}

// Job is one job of a step incident: a shard of a parallelism step or a
// job of a matrix step. A retry has the key of the job it retried, so it
// replaces it.
type Job struct {
	Order   Order `dynamodbav:"order" json:"order"`
	Failing bool  `dynamodbav:"failing" json:"failing"`
}

// Item is the stored state of one incident id, or an alias (AliasOf set).
type Item struct {
	ID string `dynamodbav:"id" json:"id"`
	// Version is the version the item was read at (0: not stored). A
	// write succeeds only while the stored version is still this one, and
	// stores Version+1.
	Version int64 `dynamodbav:"version" json:"version"`
	// Order is the newest event applied (for step incidents, the newest of
	// its jobs').
	Order Order `dynamodbav:"order" json:"order"`
	// Open: the last status sent was a trigger (FAILED or ERROR).
	Open bool `dynamodbav:"open" json:"open"`
	// Failures counts consecutive failed builds; FailedBuild is the id of
	// the last one counted, so build.failing and build.finished of one
	// build count once.
	Failures    int    `dynamodbav:"failures,omitempty" json:"failures,omitempty"`
	FailedBuild string `dynamodbav:"failed_build,omitempty" json:"failed_build,omitempty"`
	// FirstFailure is the event time of the first failure of the current
	// streak; OpenedAt that of the trigger that opened the incident.
	FirstFailure time.Time `dynamodbav:"first_failure_at,omitempty" json:"first_failure_at,omitzero"`
	OpenedAt     time.Time `dynamodbav:"opened_at,omitempty" json:"opened_at,omitzero"`
	// The status last sent to SQIBS, and the URL and pipeline slug of the
	// last event applied (sent or not).
	LastStatus string `dynamodbav:"last_status,omitempty" json:"last_status,omitempty"`
	LastURL    string `dynamodbav:"last_url,omitempty" json:"last_url,omitempty"`
	Pipeline   string `dynamodbav:"pipeline,omitempty" json:"pipeline,omitempty"`
	// Branch, and Step (the step key or job name) of a step incident: what
	// the id is made of, kept apart because a branch may hold "#" (for the
	// reconciler, which asks Buildkite about the branch).
	Branch string `dynamodbav:"branch,omitempty" json:"branch,omitempty"`
	Step   string `dynamodbav:"step,omitempty" json:"step,omitempty"`
	// Jobs are a step incident's jobs by key within the step; Floor is the
	// oldest build whose jobs still count (see applyJob).
	Jobs  map[string]Job `dynamodbav:"jobs,omitempty" json:"jobs,omitempty"`
	Floor int64          `dynamodbav:"floor,omitempty" json:"floor,omitempty"`
	// Rebuilds maps the number of each recent rebuild to the number it is
	// ordered as: the original build of its chain. Buildkite's
	// rebuilt_from names the build rebuilt, which may itself be a rebuild
	// (#13 of #12 of #10), and the chain must order as #10, not #12, or a
	// newer commit's #11 would look older than it (see ordering). The
	// newest maxRebuilds are kept.
	Rebuilds map[string]int64 `dynamodbav:"rebuilds,omitempty" json:"rebuilds,omitempty"`
	// AliasOf, on an alias item (Event.AliasKey), is the incident id that
	// the pipeline's id and branch last opened, so a renamed pipeline
	// resolves the incident its old slug opened. AliasKey and
	// AliasExpires, on an incident, say which alias item was written for it
	// and until when it lives, so that an opening rewrites it only when
	// it is missing or half way to its expiry.
	AliasOf      string    `dynamodbav:"alias_of,omitempty" json:"alias_of,omitempty"`
	AliasKey     string    `dynamodbav:"alias_key,omitempty" json:"alias_key,omitempty"`
	AliasExpires time.Time `dynamodbav:"alias_expires_at,omitempty" json:"alias_expires_at,omitzero"`
	UpdatedAt    time.Time `dynamodbav:"updated_at" json:"updated_at"`
	// ExpiresAt is DynamoDB's TTL attribute (epoch seconds in the table).
	ExpiresAt time.Time `dynamodbav:"expires_at,unixtime" json:"expires_at"`
}

// Live reports whether the item holds state (a corrupt item read back
// holds only its version) and is not past its expiry: DynamoDB deletes
// expired items only eventually (within days), so a reader must not
// trust them.
func (it *Item) Live(now time.Time) bool {
	return it != nil && !it.UpdatedAt.IsZero() && (it.ExpiresAt.IsZero() || now.Before(it.ExpiresAt))
}

// FailingJobs lists the keys of the failing jobs of a step incident.
func (it *Item) FailingJobs() []string {
	var out []string
	for k, j := range it.Jobs {
		if j.Failing {
			out = append(out, k)
		}
	}
	return out
}

// Event is what the state rules see of one mapped event.
type Event struct {
	ID     string // incident id
	Failed bool   // FAILED or ERROR (a trigger), else a resolve
	Status string
	// Order is the event's position; for a rebuild its build is the build
	// rebuilt, until Decide follows the chain to the original (ordering).
	Order Order
	// Number and RebuiltFrom are the build's own number and, for a
	// rebuild, the number of the build it rebuilt (0 otherwise).
	Number, RebuiltFrom int64
	BuildID             string // counts a build's failure once (build.failing, then build.finished)
	Job                 string // step incidents: the job's key within the step; "" for build incidents
	Step                bool   // a step (job) incident
	URL                 string
	Pipeline            string // slug, the recovery metric's dimension
	Branch              string
	StepName            string // step incidents: the step key or job name of the id
	// AliasKey names the alias item of this event's pipeline id and
	// branch (and step); "" when the payload has no pipeline id.
	AliasKey string
}

// Observe is the Event of a mapped payload: e is what Map made of p. The
// order time is e's, the event's own time as sent to SQIBS (finished_at,
// failing_at, the job's finished_at, to the millisecond).
func Observe(p *buildkite.Payload, e incident.Event) Event {
	ev := Event{
		ID:       e.ID,
		Failed:   e.Status == incident.StatusFailed || e.Status == incident.StatusError,
		Status:   e.Status,
		Order:    Order{Build: e.BuildNumber, At: e.At},
		URL:      e.URL,
		Pipeline: e.Pipeline,
		Branch:   e.Branch,
		StepName: e.Job,
		Step:     e.Job != "",
	}
	ev.Number = e.BuildNumber
	if b := p.Build; b != nil {
		ev.BuildID = b.ID
		if b.RebuiltFrom != nil && b.RebuiltFrom.Number > 0 {
			ev.RebuiltFrom = b.RebuiltFrom.Number
			ev.Order.Build = b.RebuiltFrom.Number
		}
	}
	if ev.Step && p.Job != nil {
		ev.Job = jobKey(p.Job)
	}
	if p.Pipeline != nil && p.Pipeline.ID != "" {
		// org/pipeline/branch[#step] → what follows org/pipeline/ names the
		// branch and step; the pipeline id replaces the two slugs.
		if _, rest, ok := strings.Cut(e.ID, "/"); ok {
			if _, rest, ok = strings.Cut(rest, "/"); ok {
				ev.AliasKey = AliasPrefix + p.Pipeline.ID + "/" + rest
			}
		}
	}
	return ev
}

// AliasPrefix starts the id of every alias item. Incident ids start with an
// org slug, which holds no colon, so the two never meet.
const AliasPrefix = "alias:"

// jobKey names a job within its step: the job's name (matrix jobs differ
// by it), and the shard's index for a parallelism step.
func jobKey(j *buildkite.Job) string {
	k := j.Name
	if k == "" {
		k = j.Label
	}
	if j.ParallelGroupIndex != nil {
		k += "/" + strconv.Itoa(*j.ParallelGroupIndex)
	}
	return k
}

// Settings are the rules' knobs.
type Settings struct {
	// AlertAfter is ALERT_AFTER_FAILURES: consecutive failed builds before a
	// build incident triggers (values below 1 mean 1).
	AlertAfter int
}

// Why an event was not sent.
const (
	ReasonStale          = "stale"           // older than the newest event applied
	ReasonDuplicate      = "duplicate"       // the very event applied already
	ReasonBelowThreshold = "below_threshold" // fewer than ALERT_AFTER_FAILURES failed builds
	ReasonNotOpen        = "not_open"        // a pass with no open incident to resolve
	ReasonJobsFailing    = "jobs_failing"    // a pass while other jobs of the step still fail
)

// Verdict is what to do with an event.
type Verdict struct {
	Send   bool
	Reason string // why not, when !Send
	// Next is the item to write (after the send, when Send); nil: write
	// nothing (stale and duplicate events change nothing).
	Next *Item
	// Opened: this event opens the incident (it was not open before).
	Opened bool
	// Resolved: this event resolves an open incident; Recovery is the time
	// from the streak's first failure to it.
	Resolved bool
	Recovery time.Duration
}

// maxRebuilds bounds Item.Rebuilds: chains are short and recent.
const maxRebuilds = 16

// ordering is the build number ev is ordered as: its own; for a rebuild,
// that of the original build of its chain, as far as the item remembers
// the chain (a rebuild of a build it never saw orders as that build). It
// records a rebuild in next, so a rebuild of it finds the original.
func ordering(next *Item, ev Event) int64 {
	if ev.RebuiltFrom <= 0 {
		return ev.Order.Build
	}
	n := OrderNumber(ev.Order.Build, ev.RebuiltFrom, next.Rebuilds)
	if ev.Number > 0 {
		r := maps.Clone(next.Rebuilds)
		if r == nil {
			r = map[string]int64{}
		}
		r[strconv.FormatInt(ev.Number, 10)] = n
		for len(r) > maxRebuilds { // drop the oldest rebuild
			oldest, key := int64(-1), ""
			for k := range r {
				if v, _ := strconv.ParseInt(k, 10, 64); oldest < 0 || v < oldest {
					oldest, key = v, k
				}
			}
			delete(r, key)
		}
		next.Rebuilds = r
	}
	return n
}

// OrderNumber is the build number a build is ordered as: its own, or for a
// rebuild (rebuiltFrom > 0) the original build of its chain as far as
// rebuilds (Item.Rebuilds) remember it. The reconciler orders the builds
// it learns from the API with it too.
func OrderNumber(number, rebuiltFrom int64, rebuilds map[string]int64) int64 {
	if rebuiltFrom <= 0 {
		return number
	}
	if orig, ok := rebuilds[strconv.FormatInt(rebuiltFrom, 10)]; ok {
		return orig
	}
	return rebuiltFrom
}

// Decide applies ev to prev (nil, or not Live, when there is none) at now.
func Decide(prev *Item, ev Event, s Settings, now time.Time) Verdict {
	next := Item{ID: ev.ID}
	if prev.Live(now) {
		next = *prev
		next.Jobs = maps.Clone(prev.Jobs)
	} else if prev != nil {
		next.Version = prev.Version // expired or unreadable: replaced, still conditionally
	}
	absent := !prev.Live(now)
	wasOpen := next.Open
	ev.Order.Build = ordering(&next, ev)

	var v Verdict
	if ev.Step {
		v = applyJob(&next, ev)
	} else {
		v = applyBuild(&next, ev, max(s.AlertAfter, 1))
	}
	if v.Reason == ReasonStale || v.Reason == ReasonDuplicate {
		return v
	}
	if !ev.Failed && v.Reason == ReasonNotOpen && absent {
		// Nothing known: a pass is sent as the stateless bridge would, so a
		// lost item never loses a recovery.
		v.Send, v.Reason = true, ""
	}
	if next.Order.Compare(ev.Order) < 0 {
		next.Order = ev.Order
	}
	if v.Send {
		next.LastStatus = ev.Status
	}
	next.LastURL, next.Pipeline, next.Branch, next.Step = ev.URL, ev.Pipeline, ev.Branch, ev.StepName
	next.AliasOf = ""
	next.UpdatedAt = now
	next.ExpiresAt = now.Add(TTL).Truncate(time.Second)
	if ev.Failed && v.Send {
		next.Open = true
		if !wasOpen {
			next.OpenedAt = ev.Order.At
			v.Opened = true
		}
	}
	if !ev.Failed {
		if v.Send && wasOpen {
			v.Resolved = true
			if !next.FirstFailure.IsZero() {
				v.Recovery = max(ev.Order.At.Sub(next.FirstFailure), 0)
			}
		}
		if v.Reason != ReasonJobsFailing {
			next.Open, next.OpenedAt = false, time.Time{}
			next.Failures, next.FailedBuild, next.FirstFailure = 0, "", time.Time{}
		}
	}
	v.Next = &next
	return v
}

// applyBuild applies a build event: one order for the incident, and the
// count of consecutive failed builds.
func applyBuild(it *Item, ev Event, alertAfter int) Verdict {
	// With nothing stored (no time in the order), every event is newer.
	if c := ev.Order.Compare(it.Order); c <= 0 && !it.Order.At.IsZero() {
		return notNewer(c)
	}
	if !ev.Failed {
		if it.Open {
			return Verdict{Send: true}
		}
		return Verdict{Reason: ReasonNotOpen}
	}
	if it.Failures == 0 || it.FailedBuild != ev.BuildID || ev.BuildID == "" {
		if it.Failures == 0 {
			it.FirstFailure = ev.Order.At
		}
		it.Failures++
		it.FailedBuild = ev.BuildID
	}
	if !it.Open && it.Failures < alertAfter {
		return Verdict{Reason: ReasonBelowThreshold}
	}
	return Verdict{Send: true}
}

// applyJob applies a job event to a step incident. Order is kept per job,
// so one shard's late failure is never dropped because a sibling finished
// later. Jobs of builds before Floor no longer count: when a newer build
// than any seen reports, the previous newest becomes the floor, so two
// builds running at once both count while a job that left the step (a
// lowered parallelism, a removed matrix value) cannot keep the incident
// open past the next build.
//
// ALERT_AFTER_FAILURES does not apply here: it counts builds, and a step
// incident triggers on its first failing job.
func applyJob(it *Item, ev Event) Verdict {
	if ev.Order.Build < it.Floor {
		return Verdict{Reason: ReasonStale}
	}
	if j, ok := it.Jobs[ev.Job]; ok {
		if c := ev.Order.Compare(j.Order); c <= 0 {
			return notNewer(c)
		}
	}
	if newest := it.Order.Build; ev.Order.Build > newest && newest > 0 {
		it.Floor = newest
		for k, j := range it.Jobs {
			if j.Order.Build < it.Floor {
				delete(it.Jobs, k)
			}
		}
	}
	if it.Jobs == nil {
		it.Jobs = map[string]Job{}
	}
	it.Jobs[ev.Job] = Job{Order: ev.Order, Failing: ev.Failed}
	if ev.Failed {
		if !it.Open && it.FirstFailure.IsZero() {
			it.FirstFailure = ev.Order.At
		}
		return Verdict{Send: true}
	}
	switch {
	case !it.Open:
		return Verdict{Reason: ReasonNotOpen}
	case len(it.FailingJobs()) > 0:
		return Verdict{Reason: ReasonJobsFailing}
	}
	return Verdict{Send: true}
}

func notNewer(c int) Verdict {
	if c == 0 {
		return Verdict{Reason: ReasonDuplicate}
	}
	return Verdict{Reason: ReasonStale}
}

// Any as an Item's Version makes a store's Put unconditional: alias items,
// which only ever point at the newest incident an id opened.
const Any int64 = -1

// SortOpen orders open incidents oldest first, then by id (every store's
// ListOpen, for scripts/incidents and the reconciler).
func SortOpen(items []Item) {
	slices.SortFunc(items, func(a, b Item) int {
		return cmp.Or(a.OpenedAt.Compare(b.OpenedAt), cmp.Compare(a.ID, b.ID))
	})
}
