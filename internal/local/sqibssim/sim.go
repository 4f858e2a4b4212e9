package sqibssim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/simhttp"
)

// MaxBodyBytes is the largest request body the simulator processes; larger
// bodies get 413.
const MaxBodyBytes = 1 << 20

// Incident is one incident record. A trigger after a resolve opens a new
// record with the same ID.
type Incident struct {
	ID       string `json:"id"`
	Status   string `json:"status"` // "open" or "resolved"
	Title    string `json:"title"`
	Severity string `json:"severity"`
	// Description is the full request payload, as SQIBS stores it. It is
	// left out of GET /incidents to keep that list readable.
	Description string     `json:"-"`
	OpenedAt    time.Time  `json:"opened_at"`
	ResolvedAt  *time.Time `json:"resolved_at,omitempty"`
	// Triggers counts the trigger calls that hit this incident, the one
	// that opened it included.
	Triggers int `json:"triggers"`
}

// Incident statuses.
const (
	StatusOpen     = "open"
	StatusResolved = "resolved"
)

// Fault replaces the processing of one POST. Drop wins over Hang, Hang over
// Status; a Fault with none set answers 500.
type Fault struct {
	Status int  // HTTP status to answer with, body {"error":"simulated fault"}
	Hang   bool // block until the client gives up (or Close is called)
	Drop   bool // close the connection without answering
}

// Server is the simulator. It implements http.Handler and is safe for
// concurrent use.
type Server struct {
	token      simhttp.Token
	closed     chan struct{}
	once       sync.Once
	resetRoute http.Handler // POST /reset, guarded by sameOriginOnly

	mu        sync.Mutex
	fault     func(call int, body []byte) *Fault
	posts     int // POSTs to the process endpoint seen, for fault numbering
	calls     int // POSTs processed
	incidents []*record
	open      map[string]int // id → index of its open incident
	latest    map[string]int // id → index of its newest incident
	changed   chan struct{}  // closed and replaced on every change, for Wait
	hist      history        // the calls, per incident and unmatched

	deadLetters func() []DeadLetter // SetDeadLetters
	deadHidden  map[deadKey]bool    // the dead letters listed when Reset last ran
}

// New returns a simulator that accepts token. An empty token accepts
// nothing.
func New(token string) *Server {
	s := &Server{
		token:   simhttp.NewToken(token),
		closed:  make(chan struct{}),
		changed: make(chan struct{}),
	}
	s.resetRoute = sameOriginOnly(http.HandlerFunc(s.serveReset))
	s.resetLocked()
	return s
}

// SetFault installs f, called for every POST to the process endpoint with
// its 1-based number (counted since New or Reset, faulted and unauthorized
// calls included) and its body. A non-nil Fault is applied instead of
// processing the call. A nil f removes fault injection.
func (s *Server) SetFault(f func(call int, body []byte) *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Incidents returns every incident ever recorded, oldest first.
func (s *Server) Incidents() []Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Incident, len(s.incidents))
	for i, rec := range s.incidents {
		out[i] = rec.clone()
	}
	return out
}

// Open returns the currently open incident with that id.
func (s *Server) Open(id string) (Incident, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.open[id]
	if !ok {
		return Incident{}, false
	}
	return s.incidents[i].clone(), true
}

// Calls returns how many POSTs were authorized and processed (not faulted),
// whatever their outcome.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Wait returns nil once cond(s) is true, checking now and again after every
// processed call and Reset, or ctx's error when ctx ends first. cond may
// call any method of s.
func (s *Server) Wait(ctx context.Context, cond func(*Server) bool) error {
	for {
		// Take the channel before checking, so a change in between is not missed.
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("sqibssim: wait: %w", ctx.Err())
		}
	}
}

// Reset forgets all incidents, their history and the counters, hides the
// dead letters listed so far (see SetDeadLetters) and removes the fault
// hook; the token stays.
func (s *Server) Reset() {
	s.mu.Lock()
	f := s.deadLetters
	s.mu.Unlock()
	var shown []DeadLetter
	if f != nil {
		shown = f() // outside the lock, like every call of the source
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = nil
	s.resetLocked()
	s.hideDeadLocked(shown)
	s.notifyLocked()
}

// Close releases requests held by a Hang fault (their connections are
// aborted) and makes later Hang faults abort at once. Call it before
// shutting down the http.Server or httptest.Server that serves s, whose
// shutdown otherwise waits for hung requests. The simulator keeps serving
// everything else.
func (s *Server) Close() {
	s.once.Do(func() { close(s.closed) })
}

func (s *Server) resetLocked() {
	s.posts, s.calls = 0, 0
	s.incidents = nil
	s.open = map[string]int{}
	s.latest = map[string]int{}
	s.hist = history{}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// record is an incident with the calls it received.
type record struct {
	Incident
	callLog
}

func (in *Incident) clone() Incident {
	c := *in
	if in.ResolvedAt != nil {
		t := *in.ResolvedAt
		c.ResolvedAt = &t
	}
	return c
}

// nextFault counts the POST and asks the hook, outside the lock so the hook
// may call the Server's methods.
func (s *Server) nextFault(body []byte) *Fault {
	s.mu.Lock()
	s.posts++
	n, f := s.posts, s.fault
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(n, body)
}

// Result is the body SQIBS answers a processed call with.
type Result struct {
	ID       string `json:"id"`
	Resolved struct {
		Duplicate bool `json:"duplicate"`
		Resolved  bool `json:"resolved"`
	} `json:"resolved"`
	Triggered struct {
		Duplicate bool `json:"duplicate"`
		Created   bool `json:"created"`
	} `json:"triggered"`
}

var (
	triggerWords = []string{"FAILED", "ERROR"}
	resolveWords = []string{"PASSED", "FIXED"}
)

// process applies the API filter to one authorized call (ev is
// eventOf(payload)), records it in the history and returns the HTTP status
// and body. payload and ev are nil when the body is to be treated as empty
// (unsupported Content-Type); heardID and c describe the call as it came
// (see about), so such a call still shows under its incident.
func (s *Server) process(ev map[string]any, payload []byte, from, heardID string, c Call) (int, Result) {
	status, hasStatus := field(ev, "status")
	trigger := hasStatus && containsAny(status, triggerWords)
	resolve := hasStatus && containsAny(status, resolveWords)
	id, _ := field(ev, "id")

	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	defer s.notifyLocked()

	var res Result
	res.ID = fmt.Sprintf("sim-%06d", s.calls)
	var created *record
	if trigger {
		if i, ok := s.open[id]; ok && id != "" {
			s.incidents[i].Triggers++
			res.Triggered.Duplicate = true
		} else {
			created = &record{Incident: Incident{
				ID:          id,
				Status:      StatusOpen,
				Title:       title(ev, from),
				Severity:    fieldOr(ev, "severity"),
				Description: string(payload),
				OpenedAt:    now,
				Triggers:    1,
			}}
			s.incidents = append(s.incidents, created)
			if id != "" {
				s.open[id] = len(s.incidents) - 1
				s.latest[id] = len(s.incidents) - 1
			}
			res.Triggered.Created = true
		}
	}
	if resolve && id != "" {
		if i, ok := s.open[id]; ok {
			t := now
			s.incidents[i].Status = StatusResolved
			s.incidents[i].ResolvedAt = &t
			delete(s.open, id)
			res.Resolved.Resolved = true
		} else if _, ok := s.latest[id]; ok {
			res.Resolved.Duplicate = true // its latest incident is already resolved
		}
	}

	code := 202
	switch {
	case res.Triggered.Created:
		code = 201
	case trigger || resolve:
		code = 200
	}
	c.At, c.CallID, c.Code, c.Outcome = now, res.ID, code, outcome(res, trigger, resolve)
	target := created
	if target == nil {
		target = s.latestLocked(heardID)
	}
	s.addCallLocked(target, c)
	return code, res
}

// eventOf returns the payload's "event" object, or nil when the payload is
// not a JSON object holding one.
func eventOf(payload []byte) map[string]any {
	if len(payload) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var top map[string]any
	if err := d.Decode(&top); err != nil {
		return nil
	}
	ev, _ := top["event"].(map[string]any)
	return ev
}

// field returns ev[key] as text: strings as they are, anything else (but
// null) as its JSON.
func field(ev map[string]any, key string) (string, bool) {
	v, ok := ev[key]
	if !ok || v == nil {
		return "", false
	}
	if s, ok := v.(string); ok {
		return s, true
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", false
	}
	return string(b), true
}

func fieldOr(ev map[string]any, key string) string {
	v, _ := field(ev, key)
	return v
}

func title(ev map[string]any, from string) string {
	desc, ok := field(ev, "description")
	switch {
	case ok && from != "":
		return from + " - " + desc
	case ok:
		return desc
	case from != "":
		return "Incident from " + from
	default:
		return "Incident from unknown source"
	}
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}
