// Package enrich asks Buildkite's REST API what a webhook cannot say
// (DESIGN §9): which jobs of a failed build failed, and, for a build started
// by a trigger step, what its parent build was. Both are optional extras on
// the dispatcher's path, so each call is bounded (Budget) and every failure
// is returned for the caller to send the incident without the extra and
// count it: a page is never held back for the API.
package enrich

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
)

const (
	// Budget is the most one helper spends, all its API calls included.
	Budget = time.Second
	// MaxJobs is how many failed jobs an incident names.
	MaxJobs = 5
	// maxName bounds a job name kept in failed_jobs (DESIGN §5: names ≤ 200);
	// maxTitleName bounds it in the description, which is the incident title.
	maxName      = 200
	maxTitleName = 60
)

// Jobs is the call FailedJobs makes (satisfied by *buildkiteapi.Client).
type Jobs interface {
	BuildWithJobs(ctx context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error)
}

// FailedJob is one entry of the payload's failed_jobs (the SQIBS payload's
// own type, so the receiver, which never enriches, does not link this
// package).
type FailedJob = incident.FailedJob

// Failed is what FailedJobs found.
type Failed struct {
	Jobs  []FailedJob // the first MaxJobs failed jobs, in the build's order
	Total int         // failed jobs in the build, Jobs included
}

// Suffix is the description's tail, "— failed: rspec (3/10), lint", with
// ", +N more" past MaxJobs; "" when no job failed.
func (f Failed) Suffix() string {
	if len(f.Jobs) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("— failed: ")
	for i, j := range f.Jobs {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(buildkite.Clip(j.Name, maxTitleName))
	}
	if more := f.Total - len(f.Jobs); more > 0 {
		sb.WriteString(", +" + strconv.Itoa(more) + " more")
	}
	return sb.String()
}

// Describe appends Suffix to an incident description.
func (f Failed) Describe(description string) string {
	if s := f.Suffix(); s != "" {
		return description + " " + s
	}
	return description
}

// FailedJobs fetches build number of org/pipeline with its jobs and returns
// the ones that failed, spending at most Budget (less if ctx says so). A
// failed job is a command or trigger job in state failed, timed_out or
// expired that did not soft-fail and was not retried (its retry counts
// instead); broken jobs never ran and are not failures (DESIGN §5).
func FailedJobs(ctx context.Context, api Jobs, org, pipeline string, number int64) (Failed, error) {
	ctx, cancel := context.WithTimeout(ctx, Budget)
	defer cancel()
	b, err := api.BuildWithJobs(ctx, org, pipeline, number)
	if err != nil {
		return Failed{}, fmt.Errorf("enrich: failed jobs: %w", err)
	}
	var f Failed
	for i := range b.Jobs {
		j := &b.Jobs[i]
		if !failed(j) {
			continue
		}
		f.Total++
		if len(f.Jobs) < MaxJobs {
			f.Jobs = append(f.Jobs, FailedJob{Name: displayName(j), State: j.State, ExitStatus: j.ExitStatus, WebURL: j.WebURL})
		}
	}
	return f, nil
}

func failed(j *buildkite.Job) bool {
	if j.Type != "" && j.Type != "script" && j.Type != "trigger" {
		return false // waiters and block steps never fail on their own
	}
	if j.SoftFailed || j.Retried {
		return false
	}
	switch j.State {
	case "failed", "timed_out", "expired":
		return true
	}
	return false
}

// displayName is the job's name as people read it: emoji shortcodes
// (":rspec: RSpec") dropped, a shard numbered from 1 ("RSpec (3/10)"),
// bounded, no e-mail address. Falls back to the label, then the step key.
func displayName(j *buildkite.Job) string {
	name := ""
	for _, s := range []string{j.Name, j.Label, j.StepKey} {
		if name = dropShortcodes(buildkite.Subject(s)); name != "" {
			break
		}
	}
	if name == "" {
		name = "job"
	}
	if j.ParallelGroupIndex != nil && j.ParallelGroupTotal != nil && *j.ParallelGroupTotal > 1 {
		shard := " (" + strconv.Itoa(*j.ParallelGroupIndex+1) + "/" + strconv.Itoa(*j.ParallelGroupTotal) + ")"
		return buildkite.Clip(name, maxName-len(shard)) + shard
	}
	return buildkite.Clip(name, maxName)
}

// dropShortcodes removes the words that are a Buildkite emoji shortcode
// (":rspec:", ":docker::k8s:"), which render as pictures in Buildkite and
// as noise in an incident title.
func dropShortcodes(s string) string {
	words := strings.Fields(s)
	out := words[:0]
	for _, w := range words {
		if !shortcodes(w) {
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

// shortcodes reports whether w is one or more ":name:" in a row.
func shortcodes(w string) bool {
	if len(w) < 3 || w[0] != ':' || w[len(w)-1] != ':' {
		return false
	}
	for code := range strings.SplitSeq(strings.ReplaceAll(w[1:len(w)-1], "::", "\x00"), "\x00") {
		if code == "" {
			return false
		}
		for _, c := range code {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '+' || c == '-') {
				return false
			}
		}
	}
	return true
}
