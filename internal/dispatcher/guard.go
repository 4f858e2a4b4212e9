package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/metrics"
	"github.com/callgoose/buildkite-sqibs/internal/state"
)

// Store is the incident state port (DESIGN §5b). *memstate.Store and
// *dynamo.Store satisfy it. Get returns nil for no item; Put is
// conditional on the version the item was read at and returns an error
// wrapping state.ErrConflict when that changed.
type Store interface {
	Get(ctx context.Context, id string) (*state.Item, error)
	Put(ctx context.Context, it *state.Item) error
}

// stateTimeout bounds each state call (DynamoDB answers in milliseconds;
// the SDK's own retries run inside it). It is not in DeliveryBudget: a
// read that slow only shortens the SQIBS request after it.
const stateTimeout = time.Second

// verdict is the guard's word on one event: whether to send it, and what
// to write once it is sent (or instead of sending it). nil when no state
// is kept: send, write nothing.
type verdict struct {
	state.Verdict
	ev    state.Event
	alias *state.Item // written with a trigger that opens an incident (see Item.AliasKey)
}

func (v *verdict) send() bool { return v == nil || v.Send }

// guard reads the incident's state and decides ev. A pipeline renamed
// while red is followed through its alias: when the event's own id has no
// state but its pipeline id and branch opened an incident under the old
// slug that is still open, the event goes to that incident, and pl's id
// is changed to it. Any error is transient: the event must not be sent
// without its guard.
func (h *Handler) guard(ctx context.Context, p *buildkite.Payload, pl *incident.Payload, log *slog.Logger) (*verdict, error) {
	if h.cfg.State == nil {
		return nil, nil
	}
	ev := state.Observe(p, pl.Event)
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	now := h.now()
	prev, err := h.read(ctx, ev.ID, log)
	if err != nil {
		return nil, err
	}
	if !prev.Live(now) && ev.AliasKey != "" {
		// Off the common path: only the first event of an id (or the first
		// after 90 quiet days) pays these reads.
		old, err := h.renamedFrom(ctx, ev, now, log)
		if err != nil {
			return nil, err
		}
		if old != nil {
			log.Info("pipeline renamed while its incident is open: the event goes to the incident its old slug opened",
				"renamed_id", ev.ID, "open_id", old.ID)
			ev.ID, pl.Event.ID, prev = old.ID, old.ID, old
		}
	}
	v := &verdict{Verdict: state.Decide(prev, ev, state.Settings{AlertAfter: h.cfg.Rules.AlertAfterFailures}, now), ev: ev}
	if n := v.Next; v.Opened && ev.AliasKey != "" && (n.AliasKey != ev.AliasKey || now.After(n.AliasExpires.Add(-state.TTL/2))) {
		v.alias = &state.Item{ID: ev.AliasKey, AliasOf: ev.ID, Version: state.Any, UpdatedAt: now, ExpiresAt: n.ExpiresAt}
		n.AliasKey, n.AliasExpires = ev.AliasKey, n.ExpiresAt
	}
	return v, nil
}

// read gets an item; a corrupt one is logged and comes back holding only
// its version, which counts as no state and is replaced by the next write.
func (h *Handler) read(ctx context.Context, id string, log *slog.Logger) (*state.Item, error) {
	it, err := h.cfg.State.Get(ctx, id)
	if errors.Is(err, state.ErrCorrupt) {
		log.Error("incident state unreadable: treated as absent and replaced by the next write", "state_id", id, "error", err.Error())
		return it, nil
	}
	return it, err
}

// renamedFrom is the open incident that ev's pipeline id and branch opened
// under another id, or nil.
func (h *Handler) renamedFrom(ctx context.Context, ev state.Event, now time.Time, log *slog.Logger) (*state.Item, error) {
	al, err := h.read(ctx, ev.AliasKey, log)
	if err != nil || !al.Live(now) || al.AliasOf == "" || al.AliasOf == ev.ID {
		return nil, err
	}
	old, err := h.read(ctx, al.AliasOf, log)
	if err != nil || !old.Live(now) || !old.Open {
		return nil, err
	}
	return old, nil
}

// skip handles an event the state says not to send: it is logged, and its
// effect on the state (a failure counted, the order moved on) recorded.
func (h *Handler) skip(ctx context.Context, r events.SQSMessage, v *verdict, log *slog.Logger) (ok bool, delay time.Duration) {
	log.Info("not sent to SQIBS: the incident state says so", "reason", v.Reason)
	if v.Reason == state.ReasonStale || v.Reason == state.ReasonDuplicate {
		h.metrics.Count(metrics.Stale)
	} else {
		h.metrics.Count(metrics.HeldBack) // below the threshold, nothing open, a job still failing
	}
	return h.commit(ctx, r, v, log)
}

// commit writes the verdict's state: after the send succeeded, never
// before, or a failed send would be retried against state that already
// has it, and dropped as a duplicate. A failed write is transient: the
// event is retried, decided again, and sent again (SQIBS dedupes).
func (h *Handler) commit(ctx context.Context, r events.SQSMessage, v *verdict, log *slog.Logger) (ok bool, delay time.Duration) {
	if v == nil || v.Next == nil {
		return true, 0
	}
	octx, cancel := outcomeCtx(ctx)
	defer cancel()
	// The writes' own bound; a failure is reported under octx, so a
	// dead-letter send still has time when a write timed out.
	wctx, wcancel := context.WithTimeout(octx, stateTimeout)
	defer wcancel()
	err := func() error {
		if v.alias != nil {
			// Before the item: were it last and failed, the retry would
			// find the incident open already and never write the alias.
			if err := h.cfg.State.Put(wctx, v.alias); err != nil {
				return err
			}
		}
		return h.cfg.State.Put(wctx, v.Next)
	}()
	if err != nil {
		return h.stateFailed(octx, r, err, log)
	}
	if v.Resolved {
		h.metrics.EmitPipeline(metrics.TimeToRecoveryS, metrics.Seconds, v.Recovery.Seconds(), v.ev.Pipeline)
	}
	return true, 0
}

// stateFailed reports a state read or write that failed: transient, so the
// event comes back after its backoff.
func (h *Handler) stateFailed(ctx context.Context, r events.SQSMessage, err error, log *slog.Logger) (ok bool, delay time.Duration) {
	return h.transient(ctx, r, log, failure{
		retry:  "incident state unavailable: will retry",
		giveUp: "incident state unavailable for longer than RETRY_FOR: sending the event to the dead-letter queue",
	}, "error", err.Error())
}

// stateNotice is the one line at start saying how incident state is kept.
func stateNotice(cfg Config, log *slog.Logger) {
	if cfg.State != nil {
		return
	}
	args := []any{}
	if n := cfg.Rules.AlertAfterFailures; n > 1 {
		args = append(args, "alert_after_failures_ignored", n)
	}
	log.Info("STATE_TABLE is not set: no incident state is kept, every event is sent as it comes (no order across builds, no ALERT_AFTER_FAILURES)", args...)
}
