// Package buildkite parses and authenticates Buildkite Pipelines webhooks.
//
// The Payload type is an allow-list: it names only the fields that incident
// mapping needs, so decoding a webhook into it and encoding it again is the
// trimming step. Anything not named here (env, steps, configuration,
// provider, agent tokens, e-mail addresses, ...) is dropped by construction
// and can never reach the queue or a log line.
package buildkite

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Payload is the trimmed Buildkite webhook body.
type Payload struct {
	Event    string    `json:"event,omitempty"`
	Build    *Build    `json:"build,omitempty"`
	Job      *Job      `json:"job,omitempty"`
	Pipeline *Pipeline `json:"pipeline,omitempty"`
}

// Build is the part of a build that mapping uses.
type Build struct {
	ID         string  `json:"id,omitempty"`
	URL        string  `json:"url,omitempty"`
	WebURL     string  `json:"web_url,omitempty"`
	Number     int64   `json:"number,omitzero"`
	State      string  `json:"state,omitempty"`
	Blocked    bool    `json:"blocked,omitzero"`
	Message    string  `json:"message,omitempty"`
	Commit     string  `json:"commit,omitempty"`
	Branch     string  `json:"branch,omitempty"`
	Author     *Author `json:"author,omitempty"`
	CreatedAt  Time    `json:"created_at,omitzero"`
	StartedAt  Time    `json:"started_at,omitzero"`
	FailingAt  Time    `json:"failing_at,omitzero"`
	FinishedAt Time    `json:"finished_at,omitzero"`
	// Source is how the build was started: webhook, api, ui, trigger_job
	// or schedule.
	Source string `json:"source,omitempty"`
	// PullRequest is set for pull-request builds; Buildkite sends null or
	// {} for the others. Only the id and base branch are kept: its
	// repository is a clone URL, which can embed credentials.
	PullRequest *PullRequest `json:"pull_request,omitempty"`
	// RebuiltFrom is the build this one rebuilds: the state store orders a
	// rebuild as the build it repeats.
	RebuiltFrom *BuildRef `json:"rebuilt_from,omitempty"`
	// TriggeredFrom is the build whose trigger step started this one.
	TriggeredFrom *TriggeredFrom `json:"triggered_from,omitempty"`
}

// PullRequest is build.pull_request, reduced to what the rules need.
type PullRequest struct {
	ID   FlexString `json:"id,omitzero"`
	Base string     `json:"base,omitempty"`
}

// IsPullRequest reports whether the build is a pull-request build:
// Buildkite sends "pull_request": null or {} for branch builds.
func (b *Build) IsPullRequest() bool {
	return b != nil && b.PullRequest != nil && b.PullRequest.ID != ""
}

// BuildRef names another build of the same pipeline (build.rebuilt_from).
type BuildRef struct {
	ID     string `json:"id,omitempty"`
	Number int64  `json:"number,omitzero"`
}

// TriggeredFrom is build.triggered_from: the parent build of a build that a
// trigger step started.
type TriggeredFrom struct {
	BuildID           string `json:"build_id,omitempty"`
	BuildNumber       int64  `json:"build_number,omitzero"`
	BuildPipelineSlug string `json:"build_pipeline_slug,omitempty"`
}

// FlexString is a JSON string or number kept as a string: Buildkite's
// pull-request id is a string in its docs and a number in some providers'
// payloads.
type FlexString string

// UnmarshalJSON accepts a string, a number or null.
func (f *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*f = ""
		return nil
	case b[0] == '"':
		s, err := unquote(b)
		*f = FlexString(s)
		return err
	case b[0] == '-' || b[0] >= '0' && b[0] <= '9':
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*f = FlexString(n.String())
		return nil
	}
	return fmt.Errorf("want a string or number, got %.10s", b)
}

// Job is the part of a job that mapping uses.
type Job struct {
	ID           string       `json:"id,omitempty"`
	Type         string       `json:"type,omitempty"`
	Name         string       `json:"name,omitempty"`
	Label        string       `json:"label,omitempty"`
	StepKey      string       `json:"step_key,omitempty"`
	State        string       `json:"state,omitempty"`
	WebURL       string       `json:"web_url,omitempty"`
	SoftFailed   bool         `json:"soft_failed,omitzero"`
	ExitStatus   *int         `json:"exit_status,omitempty"`
	SignalReason string       `json:"signal_reason,omitempty"`
	Retried      bool         `json:"retried,omitzero"`
	RetriesCount int          `json:"retries_count,omitzero"`
	RetrySource  *RetrySource `json:"retry_source,omitzero"` // omitzero: an empty {} stays non-nil through the queue, as Classify saw it
	StartedAt    Time         `json:"started_at,omitzero"`
	FinishedAt   Time         `json:"finished_at,omitzero"`
	// ParallelGroupIndex and ParallelGroupTotal are set on the shards of a
	// parallelism step (index from 0, so a pointer: 0 is a shard).
	ParallelGroupIndex *int `json:"parallel_group_index,omitempty"`
	ParallelGroupTotal *int `json:"parallel_group_total,omitempty"`
}

// RetrySource is set on a job that was created by retrying another one.
type RetrySource struct {
	JobID     string `json:"job_id,omitempty"`
	RetryType string `json:"retry_type,omitempty"`
}

// Pipeline is the part of a pipeline (or legacy project) that mapping uses.
// Repository is left out on purpose: clone URLs can embed credentials.
type Pipeline struct {
	// ID is the pipeline's UUID, which survives a rename of its slug.
	ID            string `json:"id,omitempty"`
	URL           string `json:"url,omitempty"`
	WebURL        string `json:"web_url,omitempty"`
	Name          string `json:"name,omitempty"`
	Slug          string `json:"slug,omitempty"`
	DefaultBranch string `json:"default_branch,omitempty"`
}

// Author is build.author, which Buildkite sends as an object or, in some
// payloads, as a bare string. Only the display name survives trimming.
type Author struct {
	Name     string `json:"name,omitempty"`
	Username string `json:"username,omitempty"`
}

// UnmarshalJSON accepts an object, a string or null. E-mail addresses are
// removed by Sanitize, which Parse runs after decoding.
func (a *Author) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		return nil
	case b[0] == '"':
		s, err := unquote(b)
		if err != nil {
			return err
		}
		// "Jane Doe <jane@example.com>" is a common string form: keep the name only.
		if i := strings.IndexByte(s, '<'); i >= 0 {
			s = strings.TrimSpace(s[:i])
		}
		a.Name = s
		return nil
	case b[0] == '{':
		var o struct {
			Name     string `json:"name"`
			Username string `json:"username"`
		}
		if err := jsonv2.Unmarshal(b, &o, decodeOptions); err != nil {
			return err
		}
		a.Name, a.Username = o.Name, o.Username
		return nil
	default:
		return fmt.Errorf("build.author: want object or string, got %.10s", b)
	}
}

// Display is the best human-readable name for the author.
func (a *Author) Display() string {
	if a == nil {
		return ""
	}
	if a.Name != "" {
		return a.Name
	}
	return a.Username
}

// Time is a Buildkite timestamp. Buildkite sends both "2018-07-01 20:14:38 UTC"
// and ISO-8601; both decode, null and "" decode to the zero Time, and it
// encodes as RFC3339 with milliseconds in UTC.
type Time struct{ time.Time }

// Layout is how timestamps are written: RFC3339, milliseconds, UTC.
const Layout = "2006-01-02T15:04:05.000Z"

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05 MST",
	"2006-01-02 15:04:05.999999999 MST",
	"2006-01-02 15:04:05 -0700",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05",
}

// ParseTime reads any timestamp form Buildkite is known to send. Instants
// whose UTC year falls outside 0000-9999 (reachable through an offset) are
// rejected: Layout could not write them back in a parseable form.
func ParseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			t = t.UTC()
			if y := t.Year(); y < 0 || y > 9999 {
				return time.Time{}, fmt.Errorf("timestamp %q: year out of range", s)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unrecognised timestamp %q", s)
}

// UnmarshalJSON accepts a string in any known layout, or null.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	s, err := unquote(b)
	if err != nil {
		return errors.New("timestamp: want a string")
	}
	if s == "" {
		return nil
	}
	v, err := ParseTime(s)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// unquote reads a JSON string; the fast path skips the decoder for the
// common case with no escapes.
func unquote(b []byte) (string, error) {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' && bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b) {
		inner := b[1 : len(b)-1]
		if bytes.IndexByte(inner, '"') < 0 {
			for _, c := range inner {
				if c < 0x20 {
					goto slow
				}
			}
			return string(inner), nil
		}
	}
slow:
	var s string
	err := json.Unmarshal(b, &s)
	return s, err
}

// MarshalJSON writes RFC3339 with milliseconds in UTC.
func (t Time) MarshalJSON() ([]byte, error) {
	return t.appendJSON(make([]byte, 0, len(Layout)+2)), nil
}

// MarshalJSONTo is MarshalJSON for the v2 encoder, which the receiver uses
// on its hot path: it writes in place instead of allocating.
func (t Time) MarshalJSONTo(enc *jsontext.Encoder) error {
	var a [len(Layout) + 2]byte
	return enc.WriteValue(t.appendJSON(a[:0]))
}

func (t Time) appendJSON(b []byte) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, Layout)
	return append(b, '"')
}

// String formats like MarshalJSON, without quotes; "" for the zero Time.
func (t Time) String() string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(Layout)
}

// wire is the decoding shape: it also accepts the legacy "project" key.
type wire struct {
	Event    string    `json:"event"`
	Build    *Build    `json:"build"`
	Job      *Job      `json:"job"`
	Pipeline *Pipeline `json:"pipeline"`
	Project  *Pipeline `json:"project"`
}

// ErrNoEvent means neither the header nor the body named the event.
var ErrNoEvent = errors.New("no event name in X-Buildkite-Event header or body")

// errNotObject is returned for bodies that are valid JSON but not an object
// (null, arrays, strings, numbers).
var errNotObject = errors.New("parse webhook body: not a JSON object")

// decodeOptions make the v2 decoder as lenient as encoding/json (v1) on the
// points where Buildkite bodies could differ from strict JSON: invalid UTF-8
// is replaced (not refused) and a repeated key takes its last value. Unknown
// keys are skipped in a single pass, which is why v2 is used here: a 5 KB
// webhook decodes ~3× faster than with v1, which validates and then scans.
var decodeOptions = jsonv2.JoinOptions(
	jsontext.AllowInvalidUTF8(true),
	jsontext.AllowDuplicateNames(true),
	jsonv2.MatchCaseInsensitiveNames(false),
)

// Parse decodes a webhook body. The event name is the body's "event" key;
// headerEvent (X-Buildkite-Event) is used only when the body has none, as
// payloads before 2016 do. The body is what the signature covers: a header
// that could override it would let a replayed webhook be re-labelled (a
// passed build sent as "build.failing"). The body must be a JSON object;
// unknown keys are ignored.
func Parse(body []byte, headerEvent string) (*Payload, error) {
	// json.Unmarshal accepts null into a struct without error; the body
	// must be an object.
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] != '{' {
		if json.Valid(body) {
			return nil, errNotObject
		}
	}
	var w wire
	if err := jsonv2.Unmarshal(body, &w, decodeOptions); err != nil {
		return nil, fmt.Errorf("parse webhook body: %w", err)
	}
	p := &Payload{Event: w.Event, Build: w.Build, Job: w.Job, Pipeline: w.Pipeline}
	if p.Event == "" {
		p.Event = HeaderEvent(headerEvent)
	}
	if p.Pipeline == nil {
		p.Pipeline = w.Project
	}
	if p.Event == "" {
		return nil, ErrNoEvent
	}
	p.Sanitize()
	return p, nil
}

// HeaderEvent is the event name an X-Buildkite-Event value gives: trimmed,
// and made valid UTF-8 as encoding/json makes the body's strings, so the
// name survives the queue unchanged.
func HeaderEvent(h string) string {
	h = strings.TrimSpace(h)
	if !utf8.ValidString(h) {
		h = strings.ToValidUTF8(h, "\uFFFD")
	}
	return h
}

// maxSubject bounds the kept commit subject: it becomes part of an incident
// title, where a screenful of text helps no one.
const maxSubject = 200

// Subject is the first non-blank line of a commit message, bounded, with
// anything that looks like an e-mail address replaced. Only the subject is
// kept: bodies carry trailers such as "Co-authored-by: Name <a@b>".
func Subject(msg string) string {
	for msg != "" {
		var line string
		line, msg, _ = strings.Cut(msg, "\n")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		// Redact before cutting, so no cut-off address survives.
		return Clip(RedactEmails(line), maxSubject)
	}
	return ""
}

// OrgSlug is the organization slug, taken from the pipeline's or the build's
// web or API URL; "" when none of them says.
func (p *Payload) OrgSlug() string {
	return Ident(p.fromURLs(func(u string) string { o, _ := slugsFromURL(u); return o }))
}

// PipelineSlug is the pipeline slug, falling back to the slug in its URLs.
func (p *Payload) PipelineSlug() string {
	if p.Pipeline != nil && p.Pipeline.Slug != "" {
		return p.Pipeline.Slug
	}
	return Ident(p.fromURLs(func(u string) string { _, s := slugsFromURL(u); return s }))
}

// fromURLs is the first non-empty pick from the pipeline's, then the build's,
// web and API URLs.
func (p *Payload) fromURLs(pick func(url string) string) string {
	var urls [4]string
	if p.Pipeline != nil {
		urls[0], urls[1] = p.Pipeline.WebURL, p.Pipeline.URL
	}
	if p.Build != nil {
		urls[2], urls[3] = p.Build.WebURL, p.Build.URL
	}
	for _, u := range urls {
		if s := pick(u); s != "" {
			return s
		}
	}
	return ""
}

// slugsFromURL understands https://buildkite.com/<org>/<pipeline>[/...] and
// https://api.buildkite.com/v2/organizations/<org>/(pipelines|projects)/<pipeline>[/...].
func slugsFromURL(u string) (org, pipeline string) {
	i := strings.Index(u, "://")
	if i < 0 {
		return "", ""
	}
	host, path, _ := strings.Cut(u[i+3:], "/")
	if host == "" {
		return "", ""
	}
	var parts [5]string
	n := 0
	for path != "" && n < len(parts) {
		var seg string
		seg, path, _ = strings.Cut(path, "/")
		if seg != "" {
			parts[n] = seg
			n++
		}
	}
	if n >= 3 && parts[0] == "v2" && parts[1] == "organizations" {
		org = parts[2]
		if n >= 5 && (parts[3] == "pipelines" || parts[3] == "projects") {
			pipeline = parts[4]
		}
		return org, pipeline
	}
	if strings.HasPrefix(host, "api.") {
		return "", ""
	}
	return parts[0], parts[1]
}
