package testkit

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Publisher is the queue.Publisher fake, as Publisher[queue.Message]: it
// keeps what it is given and answers the ids msg-1, msg-2, …; with Err set
// every Publish fails with it and keeps nothing. Safe for concurrent use.
//
// It is generic only so that this package need not import internal/queue,
// whose own tests use this package (DelayProxy).
type Publisher[M any] struct {
	Err error

	mu   sync.Mutex
	msgs []M
}

// Publish keeps m, or fails with p.Err.
func (p *Publisher[M]) Publish(_ context.Context, m M) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Err != nil {
		return "", p.Err
	}
	p.msgs = append(p.msgs, m)
	return fmt.Sprintf("msg-%d", len(p.msgs)), nil
}

// Messages is a copy of what was published, in order.
func (p *Publisher[M]) Messages() []M {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.msgs)
}

// Len is how many messages were published.
func (p *Publisher[M]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}
