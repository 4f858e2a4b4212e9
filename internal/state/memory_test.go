package state

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestMemoryConditionalPut(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	if it, err := m.Get(ctx, "a"); it != nil || err != nil {
		t.Fatalf("empty store: %v %v", it, err)
	}
	if err := m.Put(ctx, &Item{ID: "a", Open: true, Jobs: map[string]Job{"x": {Failing: true}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, &Item{ID: "a"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v; want ErrConflict", err)
	}
	it, _ := m.Get(ctx, "a")
	if it.Version != 1 || !it.Open {
		t.Fatalf("stored %+v", it)
	}
	it.Jobs["y"] = Job{} // a caller's change must not reach the store
	stale := *it
	it.Open = false
	if err := m.Put(ctx, it); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, &stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("write at an old version: %v; want ErrConflict", err)
	}
	if err := m.Put(ctx, &Item{ID: "b", Version: 3}); !errors.Is(err, ErrConflict) {
		t.Fatalf("write at a version of nothing: %v; want ErrConflict", err)
	}
	for range 2 {
		if err := m.Put(ctx, &Item{ID: "alias:x", AliasOf: "a", Version: Any}); err != nil {
			t.Fatalf("unconditional put: %v", err)
		}
	}
	if it, _ := m.Get(ctx, "a"); it.Version != 2 || it.Open || len(it.Jobs) != 2 {
		t.Errorf("after the update: %+v", it)
	}
}

func TestMemoryListOpen(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	now := time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	for _, it := range []Item{
		{ID: "late", Open: true, OpenedAt: now.Add(-time.Minute), UpdatedAt: now, ExpiresAt: now.Add(TTL)},
		{ID: "early", Open: true, OpenedAt: now.Add(-time.Hour), UpdatedAt: now, ExpiresAt: now.Add(TTL)},
		{ID: "closed", UpdatedAt: now, ExpiresAt: now.Add(TTL)},
		{ID: "expired", Open: true, UpdatedAt: now.Add(-TTL), ExpiresAt: now.Add(-time.Second)},
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
