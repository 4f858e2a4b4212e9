package sqibssim

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/callgoose/buildkite-sqibs/internal/local/simhttp"
)

// ServeHTTP routes the simulator's endpoints (see the package comment).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/v1/process"):
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.serveProcess(w, r)
	case p == "/incidents":
		if !readOnly(w, r) {
			return
		}
		s.serveIncidents(w)
	case p == "/history":
		if !readOnly(w, r) {
			return
		}
		s.serveHistory(w, r)
	case p == "/reset":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		s.resetRoute.ServeHTTP(w, r)
	case p == "/dead-letters":
		if !readOnly(w, r) {
			return
		}
		s.serveDeadLetters(w)
	case p == "/":
		if !readOnly(w, r) {
			return
		}
		s.servePage(w)
	default:
		writeJSON(w, http.StatusNotFound, errorBody("not found"))
	}
}

func (s *Server) serveProcess(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.noteUnprocessed("", Call{}, OutcomeTooLarge, http.StatusRequestEntityTooLarge)
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody("payload too large"))
			return
		}
		writeJSON(w, http.StatusBadRequest, errorBody("cannot read body"))
		return
	}
	ev := eventOf(body)
	id, call := about(ev) // for the history, whatever becomes of the call
	if f := s.nextFault(body); f != nil {
		outcome, code := faultCall(f)
		s.noteUnprocessed(id, call, outcome, code)
		s.applyFault(w, r, f)
		return
	}
	q := r.URL.Query()
	if !s.token.Matches(simhttp.Bearer(r.Header.Get("Authorization")), q.Get("token")) {
		s.noteUnprocessed(id, call, OutcomeUnauthorized, http.StatusUnauthorized)
		writeJSON(w, http.StatusUnauthorized, errorBody("unauthorized"))
		return
	}
	if !textual(r.Header.Get("Content-Type")) {
		body, ev = nil, nil // SQIBS treats unsupported content types as an empty payload
	}
	code, res := s.process(ev, body, q.Get("from"), id, call)
	writeJSON(w, code, res)
}

func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault) {
	switch {
	case f.Drop:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // HTTP/2 or hijack failed: abort the stream instead
	case f.Hang:
		select {
		case <-r.Context().Done():
		case <-s.closed:
			panic(http.ErrAbortHandler)
		}
	default:
		code := f.Status
		if code == 0 {
			code = http.StatusInternalServerError
		}
		writeJSON(w, code, errorBody("simulated fault"))
	}
}

// serveReset empties the simulator (Reset) and sends a browser back to
// the page; the 303's body tells a script it happened.
func (s *Server) serveReset(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.Header().Set("Location", "/")
	writeJSON(w, http.StatusSeeOther, map[string]bool{"reset": true})
}

// sameOriginOnly refuses state-changing requests that a browser sent from
// another page than the simulator's own (Sec-Fetch-Site other than
// same-origin or none, or an Origin whose host is not the Host): a page on
// any site, or another localhost port, must not be able to empty the
// simulator of a developer who has it open. Requests without those
// headers (curl, tests) pass.
func sameOriginOnly(h http.Handler) http.Handler {
	c := http.NewCrossOriginProtection()
	c.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusForbidden, errorBody("cross-origin request refused: reset from the simulator's own page"))
	}))
	return c.Handler(h)
}

func (s *Server) serveIncidents(w http.ResponseWriter) {
	list := s.Incidents()
	if list == nil {
		list = []Incident{} // [] rather than null
	}
	writeJSON(w, http.StatusOK, list)
}

// textual reports whether SQIBS would read a body of this Content-Type:
// absent, text/*, or JSON.
func textual(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "text/") || mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, errorBody("method not allowed"))
}

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

func writeJSON(w http.ResponseWriter, code int, v any) {
	simhttp.WriteJSON(w, code, v, `{"error":"internal error"}`)
}

// readOnly answers 405 to anything but GET and HEAD, the methods of the
// simulator's pages and lists; it reports whether to go on.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return false
	}
	return true
}
