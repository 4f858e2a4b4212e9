// Package memstate is the in-process incident state store: make dev's and
// the tests' stand-in for the DynamoDB table (internal/state/dynamo), with
// the same conditional writes. Its state ends with the process.
package memstate

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/state"
)

// Store is the in-process store.
type Store struct {
	mu    sync.Mutex
	items map[string]state.Item
	now   func() time.Time
}

// New returns an empty store.
func New() *Store { return &Store{items: map[string]state.Item{}, now: time.Now} }

// Get returns the item stored under id, or nil.
func (m *Store) Get(_ context.Context, id string) (*state.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.items[id]
	if !ok {
		return nil, nil
	}
	it.Jobs = maps.Clone(it.Jobs)
	return &it, nil
}

// Put stores it if the stored version is still it.Version (absent for 0),
// as version it.Version+1; state.ErrConflict otherwise. Unconditional puts
// (alias items) pass state.Any.
func (m *Store) Put(_ context.Context, it *state.Item) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.items[it.ID]
	if it.Version != state.Any && (ok && cur.Version != it.Version || !ok && it.Version != 0) {
		return state.ErrConflict
	}
	c := *it
	c.Version = max(cur.Version, it.Version) + 1
	c.Jobs = maps.Clone(it.Jobs)
	m.items[it.ID] = c
	return nil
}

// ListOpen lists the open incidents, oldest first: for scripts/incidents
// and the reconciler (DESIGN §9).
func (m *Store) ListOpen(context.Context) ([]state.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []state.Item
	now := m.now()
	for _, it := range m.items {
		if it.Open && it.AliasOf == "" && it.Live(now) {
			it.Jobs = maps.Clone(it.Jobs)
			out = append(out, it)
		}
	}
	state.SortOpen(out)
	return out, nil
}
