package sqibssim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// evURL is ev with the build's url and number, as the bridge sends them.
func evURL(id, status, desc, u string, build int) string {
	return fmt.Sprintf(`{"event":{"id":%q,"status":%q,"severity":"high","description":%q,"url":%q,"build_number":%d}}`,
		id, status, desc, u, build)
}

// outcomes lists a history's calls as "outcome/code".
func outcomes(calls []Call) []string {
	out := []string{}
	for _, c := range calls {
		out = append(out, fmt.Sprintf("%s/%d", c.Outcome, c.Code))
	}
	return out
}

func TestHistory(t *testing.T) {
	type call struct {
		body  string
		ct    string // default application/json
		auth  string // default the Bearer token; "-" for none
		fault *Fault
	}
	tests := []struct {
		name  string
		calls []call
		// want is each incident (oldest first) as "id:status" followed by its
		// calls' outcomes; unmatched the calls that reached no incident.
		want      [][]string
		unmatched []string
	}{
		{"trigger, duplicate, resolve", []call{
			{body: ev("a", "FAILED", "d")}, {body: ev("a", "ERROR", "d")}, {body: ev("a", "PASSED", "d")},
		}, [][]string{{"a:resolved", "created/201", "duplicate_trigger/200", "resolved/200"}}, nil},
		{"a repeated resolve stays with the incident", []call{
			{body: ev("a", "FAILED", "d")}, {body: ev("a", "FIXED", "d")}, {body: ev("a", "PASSED", "d")},
		}, [][]string{{"a:resolved", "created/201", "resolved/200", "already_resolved/200"}}, nil},
		{"a resolve for an unknown id is unmatched", []call{{body: ev("a", "PASSED", "d")}},
			nil, []string{"nothing_to_resolve/200"}},
		{"no filter matched, known id", []call{{body: ev("a", "FAILED", "d")}, {body: ev("a", "RUNNING", "d")}},
			[][]string{{"a:open", "created/201", "no_filter_matched/202"}}, nil},
		{"no filter matched, unknown id", []call{{body: ev("a", "RUNNING", "d")}, {body: `not json`}},
			nil, []string{"no_filter_matched/202", "no_filter_matched/202"}},
		{"a trigger after a resolve: later calls go to the new incident", []call{
			{body: ev("a", "FAILED", "d")}, {body: ev("a", "PASSED", "d")}, {body: ev("a", "FAILED", "d")}, {body: ev("a", "FAILED", "d")},
		}, [][]string{{"a:resolved", "created/201", "resolved/200"}, {"a:open", "created/201", "duplicate_trigger/200"}}, nil},
		{"both words", []call{{body: ev("a", "FAILED_THEN_PASSED", "d")}},
			[][]string{{"a:resolved", "created,resolved/201"}}, nil},
		{"both words on an open incident", []call{{body: ev("a", "FAILED", "d")}, {body: ev("a", "FAILED_THEN_PASSED", "d")}},
			[][]string{{"a:resolved", "created/201", "duplicate_trigger,resolved/200"}}, nil},
		{"both words, no id: created, nothing to resolve", []call{{body: `{"event":{"status":"FAILED_THEN_PASSED"}}`}},
			[][]string{{":open", "created/201"}}, nil},
		{"no id: each trigger its own incident, a resolve unmatched", []call{
			{body: `{"event":{"status":"FAILED"}}`}, {body: `{"event":{"status":"FAILED"}}`}, {body: `{"event":{"status":"PASSED"}}`},
		}, [][]string{{":open", "created/201"}, {":open", "created/201"}}, []string{"nothing_to_resolve/200"}},
		{"unauthorized calls show where they were aimed", []call{
			{body: ev("a", "FAILED", "d")}, {body: ev("a", "PASSED", "d"), auth: "-"}, {body: ev("b", "FAILED", "d"), auth: "Bearer nope"},
		}, [][]string{{"a:open", "created/201", "unauthorized/401"}}, []string{"unauthorized/401"}},
		{"an unsupported content type is an empty payload, shown under its id", []call{
			{body: ev("a", "FAILED", "d")}, {body: ev("a", "PASSED", "d"), ct: "image/png"},
		}, [][]string{{"a:open", "created/201", "no_filter_matched/202"}}, nil},
		{"simulated faults", []call{
			{body: ev("a", "FAILED", "d")},
			{body: ev("a", "PASSED", "d"), fault: &Fault{Status: 503}},
			{body: ev("a", "PASSED", "d"), fault: &Fault{}},
			{body: ev("a", "PASSED", "d"), fault: &Fault{Drop: true}},
			{body: ev("a", "PASSED", "d")},
		}, [][]string{{"a:resolved", "created/201", "simulated_fault/503", "simulated_fault/500", "simulated_drop/0", "resolved/200"}}, nil},
		{"too large", []call{{body: `"` + strings.Repeat("x", MaxBodyBytes) + `"`}},
			nil, []string{"payload_too_large/413"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			var faults []*Fault // set before any call: the hook reads it on the server's goroutines
			for _, c := range tt.calls {
				faults = append(faults, c.fault)
			}
			s.SetFault(func(n int, _ []byte) *Fault { return faults[n-1] })
			for i, c := range tt.calls {
				hdr := map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}
				switch c.auth {
				case "":
				case "-":
					delete(hdr, "Authorization")
				default:
					hdr["Authorization"] = c.auth
				}
				if c.ct != "" {
					hdr["Content-Type"] = c.ct
				}
				req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/process", strings.NewReader(c.body))
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					if c.fault == nil || !c.fault.Drop {
						t.Fatalf("call %d: %v", i, err)
					}
					continue
				}
				resp.Body.Close()
			}
			h := s.History()
			var got [][]string
			for _, in := range h.Incidents {
				got = append(got, append([]string{in.ID + ":" + in.Status}, outcomes(in.Calls)...))
				if in.CallsDropped != 0 {
					t.Errorf("incident %q: %d calls dropped", in.ID, in.CallsDropped)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("incidents\n got %q\nwant %q", got, tt.want)
			}
			if u := outcomes(h.Unmatched); !slices.Equal(u, append([]string{}, tt.unmatched...)) {
				t.Errorf("unmatched %q, want %q", u, tt.unmatched)
			}
			// Processed calls carry their result id, the others none.
			for _, in := range append(h.Incidents, IncidentHistory{Calls: h.Unmatched}) {
				for _, c := range in.Calls {
					processed := c.Code >= 200 && c.Code < 300
					if (c.CallID != "") != processed || c.At.IsZero() {
						t.Errorf("call %+v: call_id or at wrong for its code", c)
					}
				}
			}
		})
	}
}

// What a call row keeps of the payload: the link only for http(s) URLs,
// text bounded.
func TestCallFields(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	tests := []struct {
		name string
		body string
		want Call // At, CallID, Code and Outcome not compared
	}{
		{"https build", evURL("a", "FAILED", "api #7 failed", "https://buildkite.com/acme/api/builds/7", 7),
			Call{ID: "a", Status: "FAILED", Description: "api #7 failed", URL: "https://buildkite.com/acme/api/builds/7", BuildNumber: 7}},
		{"http is a web URL too", evURL("a", "FAILED", "d", "http://buildkite.local/b/1", 1),
			Call{ID: "a", Status: "FAILED", Description: "d", URL: "http://buildkite.local/b/1", BuildNumber: 1}},
		{"javascript: is not linked", evURL("a", "FAILED", "d", "javascript:alert(1)", 1),
			Call{ID: "a", Status: "FAILED", Description: "d", BuildNumber: 1}},
		{"data: is not linked", evURL("a", "FAILED", "d", "data:text/html,<script>alert(1)</script>", 1),
			Call{ID: "a", Status: "FAILED", Description: "d", BuildNumber: 1}},
		{"relative is not linked", evURL("a", "FAILED", "d", "/acme/api/builds/1", 1),
			Call{ID: "a", Status: "FAILED", Description: "d", BuildNumber: 1}},
		{"scheme-relative is not linked", evURL("a", "FAILED", "d", "//evil.example/x", 1),
			Call{ID: "a", Status: "FAILED", Description: "d", BuildNumber: 1}},
		{"too long a URL is not linked", evURL("a", "FAILED", "d", "https://buildkite.com/"+strings.Repeat("x", maxCallURL), 1),
			Call{ID: "a", Status: "FAILED", Description: "d", BuildNumber: 1}},
		{"no url, no build number", ev("a", "FAILED", "d"), Call{ID: "a", Status: "FAILED", Description: "d"}},
		{"long text is cut on a rune boundary", ev("a", "FAILED", long),
			Call{ID: "a", Status: "FAILED", Description: strings.Repeat("é", (maxCallText-len("…"))/2) + "…"}},
		{"a non-string status is its JSON", `{"event":{"id":"a","status":42}}`, Call{ID: "a", Status: "42"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			post(t, ts.URL, "", tt.body)
			h := s.History()
			calls := h.Unmatched
			if len(h.Incidents) == 1 {
				calls = h.Incidents[0].Calls
			}
			if len(calls) != 1 {
				t.Fatalf("history %+v: want one call", h)
			}
			got := calls[0]
			got.At, got.CallID, got.Code, got.Outcome = time.Time{}, "", 0, ""
			if got != tt.want {
				t.Errorf("call\n got %+v\nwant %+v", got, tt.want)
			}
			if len(got.Description) > maxCallText {
				t.Errorf("description of %d bytes", len(got.Description))
			}
		})
	}
}

func TestHistoryBounds(t *testing.T) {
	tests := []struct {
		name  string
		run   func(post func(body string))
		check func(t *testing.T, h History)
	}{
		{"an incident keeps its newest calls", func(post func(string)) {
			for i := range MaxCallsPerIncident + 7 {
				post(ev("a", "FAILED", fmt.Sprint("d", i)))
			}
		}, func(t *testing.T, h History) {
			in := h.Incidents[0]
			if len(in.Calls) != MaxCallsPerIncident || in.CallsDropped != 7 {
				t.Fatalf("%d calls, %d dropped; want %d, 7", len(in.Calls), in.CallsDropped, MaxCallsPerIncident)
			}
			if first, last := in.Calls[0].Description, in.Calls[len(in.Calls)-1].Description; first != "d7" || last != fmt.Sprint("d", MaxCallsPerIncident+6) {
				t.Errorf("calls from %s to %s, want the newest in order", first, last)
			}
			if in.Triggers != MaxCallsPerIncident+7 {
				t.Errorf("triggers %d: the bound must not touch the incident", in.Triggers)
			}
		}},
		{"unmatched calls are bounded", func(post func(string)) {
			for i := range MaxUnmatchedCalls + 3 {
				post(ev(fmt.Sprint("u", i), "PASSED", "d"))
			}
		}, func(t *testing.T, h History) {
			if len(h.Unmatched) != MaxUnmatchedCalls || h.UnmatchedDropped != 3 || h.Unmatched[0].ID != "u3" {
				t.Errorf("%d unmatched from %q, %d dropped; want %d from u3, 3", len(h.Unmatched), h.Unmatched[0].ID, h.UnmatchedDropped, MaxUnmatchedCalls)
			}
		}},
		{"past the incident bound the least recently called loses its calls", func(post func(string)) {
			for i := range MaxHistoryIncidents {
				post(ev(fmt.Sprint("i", i), "FAILED", "d"))
			}
			post(ev("i0", "FAILED", "d")) // i0 is called again: i1 is now the least recent
			post(ev("new", "FAILED", "d"))
		}, func(t *testing.T, h History) {
			if len(h.Incidents) != MaxHistoryIncidents+1 {
				t.Fatalf("%d incidents: the bound must not drop incidents", len(h.Incidents))
			}
			kept := 0
			for _, in := range h.Incidents {
				switch {
				case in.ID == "i1":
					if len(in.Calls) != 0 || in.CallsDropped != 1 {
						t.Errorf("i1: %d calls, %d dropped; want 0, 1", len(in.Calls), in.CallsDropped)
					}
				case len(in.Calls) > 0:
					kept++
				}
			}
			if kept != MaxHistoryIncidents {
				t.Errorf("%d incidents keep calls, want %d", kept, MaxHistoryIncidents)
			}
			if i0 := h.Incidents[0]; len(i0.Calls) != 2 {
				t.Errorf("i0 has %d calls, want 2", len(i0.Calls))
			}
		}},
		{"an incident that lost its calls starts again", func(post func(string)) {
			for i := range MaxHistoryIncidents + 1 {
				post(ev(fmt.Sprint("i", i), "FAILED", "d"))
			}
			post(ev("i0", "PASSED", "d"))
		}, func(t *testing.T, h History) {
			if i0 := h.Incidents[0]; !slices.Equal(outcomes(i0.Calls), []string{"resolved/200"}) || i0.CallsDropped != 1 {
				t.Errorf("i0: calls %q, %d dropped; want [resolved/200], 1", outcomes(i0.Calls), i0.CallsDropped)
			}
			if i1 := h.Incidents[1]; len(i1.Calls) != 0 {
				t.Errorf("i1 kept its calls past the bound")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			tt.run(func(body string) {
				if r := post(t, ts.URL, "", body); r.code >= 300 {
					t.Fatalf("status %d", r.code)
				}
			})
			tt.check(t, s.History())
		})
	}
}

func TestHistoryJSON(t *testing.T) {
	_, ts := newSim(t)
	if _, body := getBody(t, ts.URL+"/history"); strings.TrimSpace(body) != `{"incidents":[],"unmatched":[],"unmatched_dropped":0}` {
		t.Errorf("empty history = %s", body)
	}
	post(t, ts.URL, "?from=Buildkite", evURL("acme/api/main", "FAILED", "api #1 failed", "https://buildkite.com/acme/api/builds/1", 1))
	post(t, ts.URL, "?from=Buildkite", evURL("acme/api/main", "PASSED", "api #2 passed", "https://buildkite.com/acme/api/builds/2", 2))
	post(t, ts.URL, "", ev("acme/web/main", "ERROR", "d"))
	post(t, ts.URL, "", ev("acme/gone/main", "PASSED", "d"))

	resp, body := getBody(t, ts.URL+"/history")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var h struct {
		Incidents        []map[string]json.RawMessage
		Unmatched        []map[string]any
		UnmatchedDropped *int `json:"unmatched_dropped"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(h.Incidents) != 2 || len(h.Unmatched) != 1 || h.UnmatchedDropped == nil {
		t.Fatalf("history %s", body)
	}
	// An incident is GET /incidents' object plus calls and calls_dropped.
	_, list := getBody(t, ts.URL+"/incidents")
	var plain []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(list), &plain); err != nil {
		t.Fatal(err)
	}
	for i, in := range h.Incidents {
		for k, v := range plain[i] {
			if string(in[k]) != string(v) {
				t.Errorf("incident %d: %s = %s, /incidents says %s", i, k, in[k], v)
			}
		}
		if len(in) != len(plain[i])+2 || in["calls"] == nil || in["calls_dropped"] == nil {
			t.Errorf("incident %d keys: %s", i, body)
		}
	}
	var calls []map[string]any
	if err := json.Unmarshal(h.Incidents[0]["calls"], &calls); err != nil || len(calls) != 2 {
		t.Fatalf("calls %s: %v", h.Incidents[0]["calls"], err)
	}
	wantKeys := []string{"at", "build_number", "call_id", "code", "description", "id", "outcome", "status", "url"}
	keys := make([]string, 0, len(calls[1]))
	for k := range calls[1] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("call keys %v, want %v", keys, wantKeys)
	}
	if c := calls[1]; c["outcome"] != "resolved" || c["status"] != "PASSED" || c["code"] != 200.0 || c["call_id"] != "sim-000002" ||
		c["url"] != "https://buildkite.com/acme/api/builds/2" || c["build_number"] != 2.0 || c["id"] != "acme/api/main" {
		t.Errorf("second call %v", c)
	}
	if u := h.Unmatched[0]; u["id"] != "acme/gone/main" || u["outcome"] != "nothing_to_resolve" {
		t.Errorf("unmatched %v", u)
	}

	// ?id= keeps that id's incidents and unmatched calls.
	tests := []struct {
		id                   string
		incidents, unmatched int
	}{
		{"acme/api/main", 1, 0},
		{"acme/gone/main", 0, 1},
		{"nope", 0, 0},
		{"", 0, 0}, // ?id= alone: incidents without an id, of which there are none
	}
	for _, tt := range tests {
		t.Run("id="+tt.id, func(t *testing.T) {
			_, body := getBody(t, ts.URL+"/history?id="+tt.id)
			var h History
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				t.Fatal(err)
			}
			if len(h.Incidents) != tt.incidents || len(h.Unmatched) != tt.unmatched || !strings.Contains(body, `"unmatched":[`) || !strings.Contains(body, `"incidents":[`) {
				t.Errorf("%s: want %d incidents, %d unmatched", body, tt.incidents, tt.unmatched)
			}
		})
	}
}

// noRedirect sees a 303 as it is.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func TestResetEndpoint(t *testing.T) {
	tests := []struct {
		name string
		hdr  map[string]string
		code int
	}{
		{"no browser headers (curl)", nil, 303},
		{"the page's own origin", map[string]string{"Origin": "{self}"}, 303},
		{"same-origin fetch", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "{self}"}, 303},
		{"user-initiated", map[string]string{"Sec-Fetch-Site": "none"}, 303},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403},
		{"cross-site even with our Origin", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "{self}"}, 403},
		{"same-site: another localhost port", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"}, 403},
		{"other Origin, no Sec-Fetch-Site (older browser)", map[string]string{"Origin": "https://evil.example"}, 403},
		{"same host, other port", map[string]string{"Origin": "http://127.0.0.1:1"}, 403},
		{"opaque origin", map[string]string{"Origin": "null"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			var dead []DeadLetter
			s.SetDeadLetters(func() []DeadLetter { return dead })
			post(t, ts.URL, "", ev("a", "FAILED", "d"))
			post(t, ts.URL, "", ev("unknown", "PASSED", "d"))
			dead = []DeadLetter{{MessageID: "m-1", Reason: "sqibs_rejected", IncidentID: "a", At: time.Now()}}

			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/reset", strings.NewReader(""))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range tt.hdr {
				req.Header.Set(k, strings.ReplaceAll(v, "{self}", ts.URL))
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tt.code || err != nil {
				t.Fatalf("status %d (%v %v), want %d", resp.StatusCode, body, err, tt.code)
			}
			h := s.History()
			_, deadBody := getBody(t, ts.URL+"/dead-letters")
			emptied := s.Calls() == 0 && len(h.Incidents) == 0 && len(h.Unmatched) == 0 && strings.TrimSpace(deadBody) == "[]"
			if tt.code == 403 {
				if emptied || len(h.Incidents) != 1 || strings.TrimSpace(deadBody) == "[]" {
					t.Errorf("a refused reset changed the simulator (%d incidents, dead letters %s)", len(h.Incidents), deadBody)
				}
				if !strings.Contains(fmt.Sprint(body["error"]), "cross-origin") {
					t.Errorf("403 body %v", body)
				}
				return
			}
			if !emptied {
				t.Errorf("after reset: %d calls, %+v, dead letters %s", s.Calls(), h, deadBody)
			}
			if loc := resp.Header.Get("Location"); loc != "/" || body["reset"] != true {
				t.Errorf("Location %q body %v, want / and reset true", loc, body)
			}
			// The hidden dead letter is counted on the page; a new one shows.
			if _, page := getBody(t, ts.URL+"/"); !strings.Contains(page, "1 older dead letters are hidden") || strings.Contains(page, "m-1") {
				t.Error("page does not tell of the hidden dead letter, or shows it")
			}
			dead = append(dead, DeadLetter{MessageID: "m-2", Reason: "retry_window_exceeded", IncidentID: "a", At: time.Now()})
			if _, body := getBody(t, ts.URL+"/dead-letters"); !strings.Contains(body, "m-2") || strings.Contains(body, "m-1") {
				t.Errorf("after a new dead letter: %s, want only m-2", body)
			}
			if r := post(t, ts.URL, "", ev("a", "FAILED", "d")); r.code != 201 {
				t.Errorf("after reset: trigger %d, want 201 (id free)", r.code)
			}
		})
	}
}
