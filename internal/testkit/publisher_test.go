package testkit

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestPublisher(t *testing.T) {
	var p Publisher[string]
	for i, m := range []string{"a", "b"} {
		if id, err := p.Publish(context.Background(), m); err != nil || id != []string{"msg-1", "msg-2"}[i] {
			t.Fatalf("Publish(%q) = %q, %v", m, id, err)
		}
	}
	if got := p.Messages(); !slices.Equal(got, []string{"a", "b"}) || p.Len() != 2 {
		t.Fatalf("kept %v (Len %d), want [a b]", got, p.Len())
	}
	boom := errors.New("queue unavailable")
	p.Err = boom
	if _, err := p.Publish(context.Background(), "c"); !errors.Is(err, boom) || p.Len() != 2 {
		t.Fatalf("with Err set: %v, %d kept; want the error and nothing kept", err, p.Len())
	}
}
