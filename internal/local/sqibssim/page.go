package sqibssim

import (
	"bytes"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"
)

// page is self-contained (no external assets, no script: the CSP allows
// none) and reloads itself, so it can sit in a browser tab while `make
// dev` runs; html/template escapes everything a caller sent.
var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ts":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"tsms": func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
	// what: an outcome in words ("duplicate trigger, resolved").
	"what": func(o string) string {
		return strings.ReplaceAll(strings.ReplaceAll(o, "_", " "), ",", ", ")
	},
	"statusClass": func(status string) string {
		switch {
		case containsAny(status, triggerWords):
			return "bad"
		case containsAny(status, resolveWords):
			return "good"
		}
		return ""
	},
	"calls": func(list []Call, dropped int, withID bool) callTable {
		return callTable{list, dropped, withID}
	},
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="3">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SQIBS simulator ({{len .Open}} open)</title>
<style>
body{font:14px/1.35 system-ui,sans-serif;margin:1.2em 2em;color:#222}
header{display:flex;align-items:center;gap:1.5em}
header form{margin-left:auto}
h1{font-size:22px;margin:.2em 0}
h2{font-size:18px;margin:1em 0 .4em}
p{margin:.3em 0}
button{font:inherit;padding:.3em 1em;border:1px solid #b00020;background:#fff;color:#b00020;border-radius:4px;cursor:pointer}
button:hover{background:#b00020;color:#fff}
table{border-collapse:collapse;width:100%;margin:.3em 0 .9em}
table.calls{table-layout:fixed}
table.calls th:nth-child(1){width:7.5em}
table.calls th:nth-child(2){width:6em}
table.calls th:nth-child(3){width:13em}
table.calls th:nth-child(4){width:3.5em}
table.calls th:nth-child(5){width:4.5em}
th,td{text-align:left;padding:.2em .6em;border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:anywhere}
th{background:#f4f4f4;font-weight:600}
code{font-size:13px}
.incident{border-left:4px solid #1b7f3b;padding:0 0 0 1em;margin:0 0 .8em}
.incident.open{border-left-color:#b00020}
.incident h3{margin:.1em 0;font-size:15px}
.badge{display:inline-block;font-size:12px;text-transform:uppercase;letter-spacing:.05em;padding:0 .5em;border-radius:3px;color:#fff;background:#1b7f3b;vertical-align:1px}
.open .badge{background:#b00020}
.open>h2,.bad{color:#b00020}
.good{color:#1b7f3b}
.bad,.good{font-weight:600}
.muted{color:#777}
</style>
</head>
<body>
<header>
<h1>SQIBS simulator</h1>
<form method="post" action="/reset"><button type="submit" id="reset" title="Forget every incident, its history and the dead letters shown">Reset</button></form>
</header>
<p class="muted">{{len .Open}} open, {{len .Resolved}} resolved, {{.Calls}} calls processed{{if .HasDead}}, {{len .Dead}} dead letters{{end}}. Updated {{ts .Now}}; this page reloads every 3 s. JSON: <a href="/incidents">/incidents</a>, <a href="/history">/history</a>{{if .HasDead}}, <a href="/dead-letters">/dead-letters</a>{{end}}.</p>
{{if .HasDead}}<section id="dead-letters" class="open">
<h2>Dead letters</h2>
{{if .Dead}}<p class="muted">Events the bridge gave up on: they changed no incident.</p>
<table>
<tr><th>Incident</th><th>Event</th><th>Build</th><th>Reason</th><th>Receives</th><th>At</th><th>Message ID</th></tr>
{{range .Dead}}<tr class="dead-letter"><td><code>{{.IncidentID}}</code></td><td>{{.Event}}</td><td>{{with .Build}}{{.}}{{end}}</td><td class="bad">{{.Reason}}</td><td>{{.Receives}}</td><td>{{ts .At}}</td><td><code>{{.MessageID}}</code></td></tr>
{{end}}</table>{{else}}<p class="muted">None.</p>{{end}}
{{with .DeadHidden}}<p class="muted">{{.}} older dead letters are hidden since the reset; the queue keeps them, and <code>make dev</code> prints them all when it stops.</p>{{end}}
</section>
{{end}}<section id="open" class="open">
<h2>Open</h2>
{{range .Open}}{{template "incident" .}}{{else}}<p class="muted">None.</p>{{end}}
</section>
<section id="resolved">
<h2 class="good">Resolved</h2>
{{range .Resolved}}{{template "incident" .}}{{else}}<p class="muted">None.</p>{{end}}
</section>
{{if or .Unmatched .UnmatchedDropped}}<section id="unmatched">
<h2>Calls that reached no incident</h2>
<p class="muted">No event.id, or an id that never had an incident.</p>
{{template "calls" calls .Unmatched .UnmatchedDropped true}}
</section>
{{end}}</body>
</html>
{{define "incident"}}<article class="incident {{.Status}}">
<h3><span class="badge">{{.Status}}</span> {{.Title}}</h3>
<p class="muted"><code>{{or .ID "(no event.id)"}}</code> · severity {{or .Severity "—"}} · opened {{ts .OpenedAt}}{{with .ResolvedAt}} · resolved {{ts .}}{{end}} · {{.Triggers}} trigger{{if ne .Triggers 1}}s{{end}}</p>
{{template "calls" calls .Calls .CallsDropped false}}
</article>
{{end}}
{{define "calls"}}<table class="calls">
<tr><th>Time (UTC)</th><th>Status</th><th>What SQIBS did</th><th>HTTP</th><th>Build</th><th>{{if .WithID}}Event id, description{{else}}Description{{end}}</th></tr>
{{with .Dropped}}<tr><td colspan="6" class="muted">{{.}} earlier calls not kept</td></tr>
{{end}}{{$withID := .WithID}}{{range .Calls}}<tr class="call"><td>{{tsms .At}}</td><td class="{{statusClass .Status}}">{{or .Status "—"}}</td><td>{{what .Outcome}}</td><td>{{with .Code}}{{.}}{{else}}—{{end}}</td><td>{{if .URL}}<a href="{{.URL}}" rel="noreferrer">{{with .BuildNumber}}#{{.}}{{else}}build{{end}}</a>{{else}}—{{end}}</td><td>{{if $withID}}<code>{{or .ID "(none)"}}</code> {{end}}{{.Description}}</td></tr>
{{end}}</table>
{{end}}`))

// callTable is what the "calls" template shows.
type callTable struct {
	Calls   []Call
	Dropped int
	WithID  bool // unmatched calls: each may be about another id
}

type pageData struct {
	Open, Resolved   []IncidentHistory // newest first
	Unmatched        []Call
	UnmatchedDropped int
	Calls            int
	Now              time.Time
	Dead             []DeadLetter
	DeadHidden       int  // dead letters a reset hid
	HasDead          bool // a dead-letter source is set
}

func (s *Server) servePage(w http.ResponseWriter) {
	h := s.History()
	d := pageData{Unmatched: h.Unmatched, UnmatchedDropped: h.UnmatchedDropped, Calls: s.Calls(), Now: time.Now()}
	d.Dead, d.DeadHidden, d.HasDead = s.deadLetterList()
	slices.Reverse(h.Incidents) // newest first within each group
	for _, in := range h.Incidents {
		if in.Status == StatusOpen {
			d.Open = append(d.Open, in)
		} else {
			d.Resolved = append(d.Resolved, in)
		}
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, d); err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody("cannot render page"))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// No script, no framing (the reset button must not be clickjacked), and
	// forms post only here.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(buf.Bytes())
}
