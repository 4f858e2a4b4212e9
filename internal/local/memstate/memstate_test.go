package memstate

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/state"
)

func TestStoreConditionalPut(t *testing.T) {
	ctx := context.Background()
	m := New()
	if it, err := m.Get(ctx, "a"); it != nil || err != nil {
		t.Fatalf("empty store: %v %v", it, err)
	}
	if err := m.Put(ctx, &state.Item{ID: "a", Open: true, Jobs: map[string]state.Job{"x": {Failing: true}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, &state.Item{ID: "a"}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second create: %v; want state.ErrConflict", err)
	}
	it, _ := m.Get(ctx, "a")
	if it.Version != 1 || !it.Open {
		t.Fatalf("stored %+v", it)
	}
	it.Jobs["y"] = state.Job{} // a caller's change must not reach the store
	stale := *it
	it.Open = false
	if err := m.Put(ctx, it); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, &stale); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("write at an old version: %v; want state.ErrConflict", err)
	}
	if err := m.Put(ctx, &state.Item{ID: "b", Version: 3}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("write at a version of nothing: %v; want state.ErrConflict", err)
	}
	for range 2 {
		if err := m.Put(ctx, &state.Item{ID: "alias:x", AliasOf: "a", Version: state.Any}); err != nil {
			t.Fatalf("unconditional put: %v", err)
		}
	}
	if it, _ := m.Get(ctx, "a"); it.Version != 2 || it.Open || len(it.Jobs) != 2 {
		t.Errorf("after the update: %+v", it)
	}
}

func TestStoreListOpen(t *testing.T) {
	ctx := context.Background()
	m := New()
	now := time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	for _, it := range []state.Item{
		{ID: "late", Open: true, OpenedAt: now.Add(-time.Minute), UpdatedAt: now, ExpiresAt: now.Add(state.TTL)},
		{ID: "early", Open: true, OpenedAt: now.Add(-time.Hour), UpdatedAt: now, ExpiresAt: now.Add(state.TTL)},
		{ID: "closed", UpdatedAt: now, ExpiresAt: now.Add(state.TTL)},
		{ID: "expired", Open: true, UpdatedAt: now.Add(-state.TTL), ExpiresAt: now.Add(-time.Second)},
		{ID: "alias:p/main", AliasOf: "early", Open: true, UpdatedAt: now},
	} {
		if err := m.Put(ctx, &it); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.ListOpen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range got {
		ids = append(ids, it.ID)
	}
	if len(ids) != 2 || ids[0] != "early" || ids[1] != "late" {
		t.Errorf("open incidents %v; want [early late]", ids)
	}
}
