package devstack

import (
	"context"
	"errors"
	"fmt"

	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
)

// pollRun is one run of the poller that feeds the dispatcher.
type pollRun struct {
	ctx    context.Context // ends when a stop is asked for
	cancel context.CancelFunc
	done   chan struct{} // closed when poller.Run has returned
	err    error         // poller.Run's result, set before done closes
}

// ErrStopping is returned by StartDispatcher while an earlier
// StopDispatcher has not yet seen the poller finish its batch in hand.
var ErrStopping = errors.New("devstack: the dispatcher is still finishing its batch in hand")

// StopDispatcher stops feeding the dispatcher, as when its event source
// mapping is disabled, while the receiver keeps queueing: it stops the
// poller and waits for the batch in hand (handler and deletes) to finish.
// Nothing received is dropped: a batch is always run to its end, and what
// it reports failed comes back after its backoff. It returns ctx's error
// if ctx ends first; the poller then still stops, and a later
// StopDispatcher waits for it again. Stopping a stopped dispatcher is a
// no-op.
func (s *Stack) StopDispatcher(ctx context.Context) error {
	s.pollMu.Lock()
	r := s.poll
	s.pollMu.Unlock()
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
	default:
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("devstack: stop dispatcher: %w", ctx.Err())
		}
	}
	s.pollMu.Lock()
	if s.poll == r {
		s.poll = nil
	}
	s.pollMu.Unlock()
	return r.err
}

// StartDispatcher starts feeding the dispatcher from the queue again after
// StopDispatcher (Start calls it too). It is a no-op when the dispatcher
// is running, ErrStopping while a stop has not finished, and an error
// once Shutdown has begun.
func (s *Stack) StartDispatcher() error {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	if s.closed {
		return errors.New("devstack: start dispatcher: the stack is shut down")
	}
	if r := s.poll; r != nil {
		select {
		case <-r.done: // stopped, but StopDispatcher gave up waiting: replace it
		default:
			if r.stopping() {
				return ErrStopping
			}
			return nil // running
		}
	}
	ctx, cancel := context.WithCancel(s.pollBase)
	r := &pollRun{ctx: ctx, cancel: cancel, done: make(chan struct{})}
	s.poll = r
	go func() {
		defer close(r.done)
		r.err = poller.Run(ctx, s.pollSrc, s.Dispatcher.Handle, s.pollOpts)
	}()
	return nil
}

// DispatcherRunning reports whether the poller feeds the dispatcher (it
// was started and no stop has been asked for since).
func (s *Stack) DispatcherRunning() bool {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	return s.poll != nil && !s.poll.stopping()
}

// stopping reports whether the run was asked to stop.
func (r *pollRun) stopping() bool { return r.ctx.Err() != nil }
