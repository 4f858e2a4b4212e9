package reconciler

import (
	"context"
	"strings"

	"github.com/callgoose/buildkite-sqibs/internal/state"
)

// StateLister lists the open incidents of the incident state (DESIGN §5b):
// *memstate.Store, and *dynamo.Store over STATE_TABLE (a Scan).
type StateLister interface {
	ListOpen(ctx context.Context) ([]state.Item, error)
}

// FromState is the OpenIncidents port over the incident state: each open
// item becomes an Incident whose failure is the item's order (the order
// number of the newest event applied, for a rebuild the number it rebuilt,
// and that event's own time), the reconciler's "newer" being the store's.
func FromState(l StateLister) OpenIncidents { return stateIncidents{l} }

type stateIncidents struct{ l StateLister }

func (s stateIncidents) OpenIncidents(ctx context.Context) ([]Incident, error) {
	items, err := s.l.ListOpen(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Incident, 0, len(items))
	for i := range items {
		out = append(out, fromItem(&items[i]))
	}
	return out, nil
}

// fromItem maps one item. The org is the id's first segment (an org slug
// holds no "/"); the pipeline and branch are the item's own fields, since a
// branch may hold "/" and "#". A step incident (Step set) keeps its id, which
// then is not org/pipeline/branch, so Run skips it.
func fromItem(it *state.Item) Incident {
	org, rest, _ := strings.Cut(it.ID, "/")
	slug, _, _ := strings.Cut(rest, "/")
	return Incident{
		ID:          it.ID,
		Org:         org,
		Pipeline:    it.Pipeline,
		Slug:        slug,
		Branch:      it.Branch,
		FailedBuild: it.Order.Build,
		FailedAt:    it.Order.At,
		Rebuilds:    it.Rebuilds,
	}
}
