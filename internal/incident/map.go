package incident

import (
	"strconv"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

// Payload is the body POSTed to SQIBS (DESIGN §5).
type Payload struct {
	Event Event `json:"event"`
}

// Event is the incident event. Field order is the wire order: the six seed
// keys first, then the extras.
type Event struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Severity    string `json:"severity"`
	Description string `json:"description"`
	Host        string `json:"host"`
	Timestamp   string `json:"timestamp"`
	// At is Timestamp as a time, for the incident state's order (not sent).
	At          time.Time `json:"-"`
	URL         string    `json:"url,omitempty"`
	SourceEvent string    `json:"source_event"`
	Pipeline    string    `json:"pipeline"`
	Branch      string    `json:"branch"`
	BuildNumber int64     `json:"build_number,omitempty"`
	State       string    `json:"state,omitempty"`
	Commit      string    `json:"commit,omitempty"`
	Author      string    `json:"author,omitempty"`
	Job         string    `json:"job,omitempty"`       // job incidents: step key or job name
	JobState    string    `json:"job_state,omitempty"` // job incidents: the job's own state
	ExitStatus  *int      `json:"exit_status,omitempty"`
	// FailedJobs are a failed build's failed jobs, from Buildkite's API
	// (DESIGN §9); absent without the API or when it did not answer.
	FailedJobs []FailedJob `json:"failed_jobs,omitempty"`
	// Origin is who queued an event no webhook sent ("reconciler").
	Origin string `json:"origin,omitempty"`
}

// FailedJob is one entry of failed_jobs: name, state, exit status, web URL.
type FailedJob struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	ExitStatus *int   `json:"exit_status,omitempty"`
	WebURL     string `json:"web_url,omitempty"`
}

// Map turns an event into the SQIBS payload. ok is false when the event
// changes no incident; d.Reason then says why. received is the fallback
// timestamp when the payload carries none of its own.
func (r Rules) Map(p *buildkite.Payload, received time.Time) (pl Payload, d Decision, ok bool) {
	return r.mapDecided(p, received, r.Classify(p))
}

// MapAs is Map with the branch and pull request judged by j (ClassifyAs).
func (r Rules) MapAs(p *buildkite.Payload, received time.Time, j *Judge) (pl Payload, d Decision, ok bool) {
	return r.mapDecided(p, received, r.ClassifyAs(p, j))
}

func (r Rules) mapDecided(p *buildkite.Payload, received time.Time, d Decision) (pl Payload, _ Decision, ok bool) {
	if !d.Act {
		return Payload{}, d, false
	}
	b := p.Build
	pipeline := p.PipelineSlug()
	e := Event{
		ID:          d.ID,
		Status:      d.Status,
		Severity:    r.Severity,
		Host:        "buildkite.com/" + orgOrDefault(p) + "/" + pipeline,
		URL:         b.WebURL,
		SourceEvent: p.Event,
		Pipeline:    pipeline,
		Branch:      b.Branch,
		BuildNumber: b.Number,
		State:       b.State,
		Commit:      b.Commit,
		Author:      b.Author.Display(),
	}
	if e.Severity == "" {
		e.Severity = DefaultSeverity
	}
	var ts time.Time
	var what string
	if d.Job {
		j := p.Job
		e.Job = jobName(j)
		e.JobState = j.State
		e.ExitStatus = j.ExitStatus
		if j.WebURL != "" {
			e.URL = j.WebURL
		}
		ts = firstTime(j.FinishedAt, b.FinishedAt, j.StartedAt)
		what = "step " + e.Job + shard(j) + " " + jobVerb(d.Status, j)
	} else {
		if p.Event == "build.failing" {
			ts = firstTime(b.FailingAt, b.StartedAt, b.CreatedAt)
		} else {
			ts = firstTime(b.FinishedAt, b.FailingAt, b.StartedAt, b.CreatedAt)
		}
		what = buildVerb(p.Event, b.State)
	}
	if ts.IsZero() {
		ts = received
	}
	e.At = ts.UTC().Truncate(time.Millisecond) // what Timestamp says
	e.Timestamp = e.At.Format(buildkite.Layout)
	e.Description = describe(pipeline, b, what)
	return Payload{Event: e}, d, true
}

// shard names the shard of a parallelism step, " (2/4)", as Buildkite
// labels it (from 1); "" for other jobs.
func shard(j *buildkite.Job) string {
	if j.ParallelGroupIndex == nil || j.ParallelGroupTotal == nil || *j.ParallelGroupTotal < 1 {
		return ""
	}
	return " (" + strconv.Itoa(*j.ParallelGroupIndex+1) + "/" + strconv.Itoa(*j.ParallelGroupTotal) + ")"
}

func firstTime(ts ...buildkite.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t.Time
		}
	}
	return time.Time{}
}

func buildVerb(event, state string) string {
	switch {
	case event == "build.failing":
		return "is failing"
	case state == "canceled":
		return "was canceled"
	default:
		return state // failed, passed
	}
}

func jobVerb(status string, j *buildkite.Job) string {
	switch status {
	case StatusFixed:
		return "passed after retry"
	case StatusPassed:
		return "passed"
	case StatusError:
		switch j.State {
		case "timed_out":
			return "timed out"
		case "expired":
			return "expired (no agent took it)"
		}
		if j.SignalReason != "" {
			return "stopped by agent (" + strings.ReplaceAll(j.SignalReason, "_", " ") + ")"
		}
		return "errored"
	}
	return "failed"
}

// describe is the one-line title: "deploy-api #1234 failed on main: Fix flaky test".
func describe(pipeline string, b *buildkite.Build, what string) string {
	var sb strings.Builder
	sb.Grow(64 + len(pipeline) + len(b.Branch))
	sb.WriteString(pipeline)
	if b.Number != 0 {
		sb.WriteString(" #")
		sb.WriteString(strconv.FormatInt(b.Number, 10))
	}
	sb.WriteByte(' ')
	sb.WriteString(what)
	sb.WriteString(" on ")
	sb.WriteString(b.Branch)
	if s := buildkite.Subject(b.Message); s != "" {
		sb.WriteString(": ")
		sb.WriteString(s)
	}
	return sb.String()
}
