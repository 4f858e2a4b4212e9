package sqibssim

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// History bounds: enough to follow incidents through a session of `make
// dev`, while a soak or a stray loop cannot grow the simulator without end.
const (
	// MaxCallsPerIncident is how many calls each incident keeps, the newest.
	MaxCallsPerIncident = 50
	// MaxHistoryIncidents is how many incidents keep calls at all; past it
	// the least recently called one loses its calls (the incident stays).
	MaxHistoryIncidents = 200
	// MaxUnmatchedCalls is how many calls that reached no incident are kept.
	MaxUnmatchedCalls = 50
)

// Bounds on the text a call keeps: the bridge sends far less, anyone else
// could send a megabyte.
const (
	maxCallID   = 1024 // above what the bridge's ids reach (DESIGN §5 bounds their parts)
	maxCallText = 300
	maxCallURL  = 2048
)

// Call is one POST to the process endpoint as the history keeps it: what
// came (read from the body as sent, whatever SQIBS then made of it) and
// what the simulator did.
type Call struct {
	At time.Time `json:"at"`
	// CallID is the result id of a processed call ("sim-000001"); empty
	// for one that was not processed (unauthorized, simulated fault).
	CallID  string `json:"call_id,omitempty"`
	Code    int    `json:"code"`    // the HTTP status answered; 0 when none was (simulated hang or drop)
	Outcome string `json:"outcome"` // an Outcome constant, or two joined by "," ("created,resolved")
	// ID, Status and Description are event.id, event.status and
	// event.description, cut to a bound; "" when absent.
	ID          string `json:"id"`
	Status      string `json:"status"`
	Description string `json:"description,omitempty"`
	BuildNumber int64  `json:"build_number,omitempty"` // event.build_number
	// URL is event.url (the Buildkite build) when it is an absolute http
	// or https URL, else empty: the page links to it.
	URL string `json:"url,omitempty"`
}

// Call outcomes.
const (
	OutcomeCreated          = "created"
	OutcomeDuplicateTrigger = "duplicate_trigger"
	OutcomeResolved         = "resolved"
	OutcomeAlreadyResolved  = "already_resolved"   // the id's latest incident was resolved before
	OutcomeNothingToResolve = "nothing_to_resolve" // the id never had an incident, or there is no id
	OutcomeNoFilter         = "no_filter_matched"
	OutcomeUnauthorized     = "unauthorized"
	OutcomeFault            = "simulated_fault" // Code is the status SetFault asked for
	OutcomeHang             = "simulated_hang"
	OutcomeDrop             = "simulated_drop"
	OutcomeTooLarge         = "payload_too_large"
)

// IncidentHistory is an incident with the calls it received, oldest first.
type IncidentHistory struct {
	Incident
	Calls []Call `json:"calls"`
	// CallsDropped counts its older calls that the bounds let go.
	CallsDropped int `json:"calls_dropped"`
}

// History is GET /history: every incident, in the order of GET
// /incidents (oldest first), with its calls; and the calls that reached no
// incident (no event.id, or one that never had an incident).
type History struct {
	Incidents        []IncidentHistory `json:"incidents"`
	Unmatched        []Call            `json:"unmatched"`
	UnmatchedDropped int               `json:"unmatched_dropped"`
}

// callLog is what an incident, or the unmatched list, keeps of its calls.
type callLog struct {
	calls    []Call // the newest, oldest first
	total    int    // calls ever added
	lastCall int    // history.seq at the latest one, to choose whose calls go first
	kept     bool   // counted in history.kept
}

// history is the Server's part that keeps calls; guarded by Server.mu.
type history struct {
	seq       int       // calls recorded since New or Reset
	kept      []*record // the incidents holding calls, at most MaxHistoryIncidents
	unmatched callLog
}

// about reads, from a call's event object as sent, the id it is about and
// the row the history shows for it; At, CallID, Code and Outcome are left
// to whoever knows the outcome.
func about(ev map[string]any) (string, Call) {
	id, _ := field(ev, "id")
	c := Call{
		ID:          clip(id, maxCallID),
		Status:      clip(fieldOr(ev, "status"), maxCallText),
		Description: clip(fieldOr(ev, "description"), maxCallText),
		URL:         webURL(fieldOr(ev, "url")),
	}
	c.BuildNumber, _ = strconv.ParseInt(fieldOr(ev, "build_number"), 10, 64)
	return id, c
}

// outcome names what process did, trigger part first.
func outcome(res Result, trigger, resolve bool) string {
	var parts []string
	switch {
	case res.Triggered.Created:
		parts = append(parts, OutcomeCreated)
	case res.Triggered.Duplicate:
		parts = append(parts, OutcomeDuplicateTrigger)
	}
	switch {
	case res.Resolved.Resolved:
		parts = append(parts, OutcomeResolved)
	case res.Resolved.Duplicate:
		parts = append(parts, OutcomeAlreadyResolved)
	case resolve && !trigger:
		parts = append(parts, OutcomeNothingToResolve)
	}
	if len(parts) == 0 {
		return OutcomeNoFilter
	}
	return strings.Join(parts, ",")
}

// faultCall is the outcome and status of a call that f replaced.
func faultCall(f *Fault) (string, int) {
	switch {
	case f.Drop:
		return OutcomeDrop, 0
	case f.Hang:
		return OutcomeHang, 0
	case f.Status == 0:
		return OutcomeFault, http.StatusInternalServerError
	default:
		return OutcomeFault, f.Status
	}
}

// noteUnprocessed records a call that got no SQIBS processing (a fault,
// 401, 413) under the latest incident of id, if any.
func (s *Server) noteUnprocessed(id string, c Call, outcome string, code int) {
	c.At, c.Outcome, c.Code = time.Now().UTC(), outcome, code
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addCallLocked(s.latestLocked(id), c)
	s.notifyLocked()
}

// latestLocked is the newest incident of id, nil when there is none (or
// no id: unmapped incidents take no later calls).
func (s *Server) latestLocked(id string) *record {
	if i, ok := s.latest[id]; ok && id != "" {
		return s.incidents[i]
	}
	return nil
}

// addCallLocked appends c to rec's calls, or to the unmatched ones when
// rec is nil, within the bounds.
func (s *Server) addCallLocked(rec *record, c Call) {
	s.hist.seq++
	l, limit := &s.hist.unmatched, MaxUnmatchedCalls
	if rec != nil {
		l, limit = &rec.callLog, MaxCallsPerIncident
		if !l.kept {
			s.keepLocked(rec)
		}
	}
	if len(l.calls) >= limit {
		l.calls = slices.Delete(l.calls, 0, len(l.calls)-limit+1)
	}
	l.calls = append(l.calls, c)
	l.total++
	l.lastCall = s.hist.seq
}

// keepLocked counts rec among the incidents holding calls, first taking
// the calls of the least recently called one when there are too many: an
// old incident still being triggered keeps its history, a long-resolved
// one loses it.
func (s *Server) keepLocked(rec *record) {
	rec.kept = true
	if len(s.hist.kept) < MaxHistoryIncidents {
		s.hist.kept = append(s.hist.kept, rec)
		return
	}
	oldest := 0
	for i, k := range s.hist.kept {
		if k.lastCall < s.hist.kept[oldest].lastCall {
			oldest = i
		}
	}
	s.hist.kept[oldest].calls, s.hist.kept[oldest].kept = nil, false
	s.hist.kept[oldest] = rec
}

// History returns every incident with its calls, and the unmatched calls;
// copies, oldest first.
func (s *Server) History() History {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := History{
		Incidents:        make([]IncidentHistory, len(s.incidents)),
		Unmatched:        slices.Clone(s.hist.unmatched.calls),
		UnmatchedDropped: s.hist.unmatched.total - len(s.hist.unmatched.calls),
	}
	for i, rec := range s.incidents {
		h.Incidents[i] = IncidentHistory{
			Incident:     rec.clone(),
			Calls:        slices.Clone(rec.calls),
			CallsDropped: rec.total - len(rec.calls),
		}
	}
	return h
}

// serveHistory answers GET /history, with ?id= only that id's incidents
// and unmatched calls.
func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	h := s.History()
	if q := r.URL.Query(); q.Has("id") {
		id := q.Get("id")
		h.Incidents = slices.DeleteFunc(h.Incidents, func(in IncidentHistory) bool { return in.ID != id })
		h.Unmatched = slices.DeleteFunc(h.Unmatched, func(c Call) bool { return c.ID != id })
	}
	// [] rather than null
	if h.Incidents == nil {
		h.Incidents = []IncidentHistory{}
	}
	for i := range h.Incidents {
		if h.Incidents[i].Calls == nil {
			h.Incidents[i].Calls = []Call{}
		}
	}
	if h.Unmatched == nil {
		h.Unmatched = []Call{}
	}
	writeJSON(w, http.StatusOK, h)
}

// webURL returns u when it is an absolute http(s) URL of sane length, so
// the page links only to web pages (never javascript: or data:).
func webURL(u string) string {
	if len(u) > maxCallURL {
		return ""
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return ""
	}
	return u
}

// clip cuts s to at most n bytes, marking the cut; ToValidUTF8 drops the
// piece of a rune the cut may leave.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}
