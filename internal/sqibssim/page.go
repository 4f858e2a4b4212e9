package sqibssim

import (
	"bytes"
	"html/template"
	"net/http"
	"slices"
	"time"
)

// page is self-contained (no external assets) and reloads itself, so it can
// sit in a browser tab while `make dev` runs.
var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ts": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="3">
<title>SQIBS simulator ({{len .Open}} open)</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#f4f4f4}
code{font-size:13px}
.open{color:#b00020;font-weight:600}
.resolved{color:#1b7f3b}
.muted{color:#777}
</style>
</head>
<body>
<h1>SQIBS simulator</h1>
<p class="muted">{{len .Open}} open, {{len .Resolved}} resolved, {{.Calls}} calls processed{{if .HasDead}}, {{len .Dead}} dead letters{{end}}. Updated {{ts .Now}}; this page reloads every 3 s. JSON: <a href="/incidents">/incidents</a>{{if .HasDead}}, <a href="/dead-letters">/dead-letters</a>{{end}}.</p>
{{if .HasDead}}<h2 class="open">Dead letters</h2>
{{if .Dead}}<p class="muted">Events the bridge gave up on: they changed no incident.</p>
<table>
<tr><th>Incident</th><th>Event</th><th>Build</th><th>Reason</th><th>Receives</th><th>At</th><th>Message ID</th></tr>
{{range .Dead}}<tr><td><code>{{.IncidentID}}</code></td><td>{{.Event}}</td><td>{{with .Build}}{{.}}{{end}}</td><td class="open">{{.Reason}}</td><td>{{.Receives}}</td><td>{{ts .At}}</td><td><code>{{.MessageID}}</code></td></tr>
{{end}}</table>{{else}}<p class="muted">None.</p>{{end}}{{end}}
<h2 class="open">Open</h2>
{{template "table" .Open}}
<h2 class="resolved">Resolved</h2>
{{template "table" .Resolved}}
</body>
</html>
{{define "table"}}{{if .}}<table>
<tr><th>ID</th><th>Title</th><th>Severity</th><th>Opened</th><th>Resolved</th><th>Triggers</th></tr>
{{range .}}<tr><td><code>{{.ID}}</code></td><td>{{.Title}}</td><td>{{.Severity}}</td><td>{{ts .OpenedAt}}</td><td>{{with .ResolvedAt}}{{ts .}}{{else}}—{{end}}</td><td>{{.Triggers}}</td></tr>
{{end}}</table>{{else}}<p class="muted">None.</p>{{end}}{{end}}
`))

type pageData struct {
	Open, Resolved []Incident
	Calls          int
	Now            time.Time
	Dead           []DeadLetter
	HasDead        bool // a dead-letter source is set
}

func (s *Server) servePage(w http.ResponseWriter) {
	all := s.Incidents()
	d := pageData{Calls: s.Calls(), Now: time.Now()}
	d.Dead, d.HasDead = s.deadLetterList()
	slices.Reverse(all) // newest first within each group
	for _, in := range all {
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
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Write(buf.Bytes())
}
