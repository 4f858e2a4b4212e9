package state

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// Memory is the in-process store (make dev, tests), with the conditional
// writes of the DynamoDB adapter. Its state ends with the process.
type Memory struct {
	mu    sync.Mutex
	items map[string]Item
	now   func() time.Time
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{items: map[string]Item{}, now: time.Now} }

// Get returns the item stored under id, or nil.
func (m *Memory) Get(_ context.Context, id string) (*Item, error) {
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
// as version it.Version+1; ErrConflict otherwise. Unconditional puts
// (alias items) pass Any.
func (m *Memory) Put(_ context.Context, it *Item) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.items[it.ID]
	if it.Version != Any && (ok && cur.Version != it.Version || !ok && it.Version != 0) {
		return ErrConflict
	}
	c := *it
	c.Version = max(cur.Version, it.Version) + 1
	c.Jobs = maps.Clone(it.Jobs)
	m.items[it.ID] = c
	return nil
}

// Any as an Item's Version makes Put unconditional: alias items, which
// only ever point at the newest incident an id opened.
const Any int64 = -1

// ListOpen lists the open incidents, oldest first: for scripts/incidents
// and the reconciler (DESIGN §9).
func (m *Memory) ListOpen(context.Context) ([]Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Item
	now := m.now()
	for _, it := range m.items {
		if it.Open && it.AliasOf == "" && it.Live(now) {
			it.Jobs = maps.Clone(it.Jobs)
			out = append(out, it)
		}
	}
	SortOpen(out)
	return out, nil
}

// SortOpen orders open incidents oldest first, then by id.
func SortOpen(items []Item) {
	slices.SortFunc(items, func(a, b Item) int {
		return cmp.Or(a.OpenedAt.Compare(b.OpenedAt), cmp.Compare(a.ID, b.ID))
	})
}
