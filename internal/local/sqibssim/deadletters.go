package sqibssim

import (
	"net/http"
	"time"
)

// DeadLetter is an event the bridge gave up on, as the simulator shows it:
// `make dev` feeds it the in-process queue's dead letters, so they appear
// next to the incidents they did not change.
type DeadLetter struct {
	MessageID  string    `json:"message_id"`
	Reason     string    `json:"reason"`
	IncidentID string    `json:"incident_id"` // the message group
	Event      string    `json:"event,omitempty"`
	Build      int64     `json:"build_number,omitempty"`
	Receives   int       `json:"receives,omitempty"`
	At         time.Time `json:"at"`
}

// SetDeadLetters makes GET /dead-letters and the page list what f returns,
// but for those it returned when Reset last ran. Without it (the bridge's
// queue is SQS, with its own DLQ) /dead-letters answers 404 and the page
// has no such section.
//
// A reset hides dead letters rather than deleting them: they are the
// queue's, the only record of events that never reached SQIBS, and `make
// dev` still prints them all when it stops.
func (s *Server) SetDeadLetters(f func() []DeadLetter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadLetters = f
	s.deadHidden = nil
}

// deadKey tells dead letters apart: a message id alone may be empty or
// come back after a redrive.
type deadKey struct {
	id, reason string
	at         int64
}

func keyOf(d DeadLetter) deadKey { return deadKey{d.MessageID, d.Reason, d.At.UnixNano()} }

// hideDeadLocked hides shown from now on; it replaces what an earlier
// reset hid, as shown holds that too.
func (s *Server) hideDeadLocked(shown []DeadLetter) {
	s.deadHidden = nil
	if len(shown) > 0 {
		s.deadHidden = make(map[deadKey]bool, len(shown))
	}
	for _, d := range shown {
		s.deadHidden[keyOf(d)] = true
	}
}

// deadLetterList returns the dead letters shown (since the last Reset)
// and how many a reset hid; ok is false when no source is set.
func (s *Server) deadLetterList() (list []DeadLetter, hidden int, ok bool) {
	s.mu.Lock()
	f := s.deadLetters
	s.mu.Unlock()
	if f == nil {
		return nil, 0, false
	}
	all := f() // outside the lock: the source takes the queue's
	s.mu.Lock()
	defer s.mu.Unlock()
	list = []DeadLetter{} // [] rather than null
	for _, d := range all {
		if !s.deadHidden[keyOf(d)] {
			list = append(list, d)
		}
	}
	return list, len(all) - len(list), true
}

func (s *Server) serveDeadLetters(w http.ResponseWriter) {
	list, _, ok := s.deadLetterList()
	if !ok {
		writeJSON(w, http.StatusNotFound, errorBody("no dead letters here: the bridge's queue is SQS; list its DLQ with scripts/redrive-dlq -dry-run"))
		return
	}
	writeJSON(w, http.StatusOK, list)
}
