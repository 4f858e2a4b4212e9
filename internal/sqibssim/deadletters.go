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

// SetDeadLetters makes GET /dead-letters and the page list what f returns.
// Without it (the bridge's queue is SQS, with its own DLQ) /dead-letters
// answers 404 and the page has no such section.
func (s *Server) SetDeadLetters(f func() []DeadLetter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadLetters = f
}

// deadLetterList is nil when no source is set.
func (s *Server) deadLetterList() ([]DeadLetter, bool) {
	s.mu.Lock()
	f := s.deadLetters
	s.mu.Unlock()
	if f == nil {
		return nil, false
	}
	list := f()
	if list == nil {
		list = []DeadLetter{} // [] rather than null
	}
	return list, true
}

func (s *Server) serveDeadLetters(w http.ResponseWriter) {
	list, ok := s.deadLetterList()
	if !ok {
		writeJSON(w, http.StatusNotFound, errorBody("no dead letters here: the bridge's queue is SQS; list its DLQ with scripts/redrive-dlq -dry-run"))
		return
	}
	writeJSON(w, http.StatusOK, list)
}
