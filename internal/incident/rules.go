// Package incident decides what a Buildkite event means for an SQIBS incident:
// whether it can ever act (Classify, used by the receiver to drop noise and by
// the dispatcher to map), the incident id, and the SQIBS payload (Map).
//
// Receiver and dispatcher share Classify so that what the receiver queues is
// exactly what the dispatcher maps.
package incident

import (
	"strings"
	"unicode/utf8"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/config"
)

// Statuses sent to SQIBS (DESIGN §5).
const (
	StatusFailed = "FAILED"
	StatusError  = "ERROR"
	StatusPassed = "PASSED"
	StatusFixed  = "FIXED"
)

// Rules are the ALERT_* / JOB_INCIDENTS / SEVERITY settings.
type Rules struct {
	Branches     []string // globs; "default" = the pipeline's default branch
	Pipelines    []string // globs on the pipeline slug
	OnFailing    bool
	OnCanceled   bool
	JobIncidents bool
	Severity     string
	PullRequests bool // ALERT_PULL_REQUESTS: pull-request builds may alert
	// AlertAfterFailures is ALERT_AFTER_FAILURES: consecutive failed builds
	// of a build incident before it triggers. Only the dispatcher's
	// incident state (STATE_TABLE) can count them; without it, 1.
	AlertAfterFailures int
	// TriggeredByParent: a Buildkite API token is configured, so a build
	// with triggered_from is judged by its parent build's branch and pull
	// request (DESIGN §9), which only the dispatcher can look up. Classify
	// (the receiver) then leaves those two checks to the dispatcher for
	// such builds instead of dropping a child whose own branch does not
	// alert; MapAs with a Judge decides them. Without a token it is false
	// and nothing changes: the child's own branch decides.
	TriggeredByParent bool
}

// The variables of the Buildkite API token (DESIGN §2). Named here because
// the rules depend on whether one is set; app.BuildkiteAPITokenVars reads
// the token itself.
const (
	APITokenVar    = "BUILDKITE_API_TOKEN"
	APITokenARNVar = "BUILDKITE_API_TOKEN_SECRET_ARN"
)

// DefaultSeverity is SEVERITY's default (DESIGN §2).
const DefaultSeverity = "high"

// Severities SQIBS understands.
var severities = []string{"critical", "high", "medium", "low", "info"}

// LoadRules reads the rules table of DESIGN §2.
func LoadRules(r *config.Reader) Rules {
	return Rules{
		Branches:     r.List("ALERT_BRANCHES", []string{"default"}),
		Pipelines:    r.List("ALERT_PIPELINES", []string{"*"}),
		OnFailing:    r.Bool("ALERT_ON_FAILING", true),
		OnCanceled:   r.Bool("ALERT_ON_CANCELED", false),
		JobIncidents: r.Bool("JOB_INCIDENTS", false),
		Severity:     r.OneOf("SEVERITY", DefaultSeverity, severities...),
		PullRequests: r.Bool("ALERT_PULL_REQUESTS", false),
		// 1000: a bound that catches a typo, far beyond any useful value.
		AlertAfterFailures: int(r.Int("ALERT_AFTER_FAILURES", 1, 1, 1000)),
		TriggeredByParent:  r.Has(APITokenVar) || r.Has(APITokenARNVar),
	}
}

// DefaultRules are the rules with every variable unset.
func DefaultRules() Rules {
	return LoadRules(config.NewReader(config.Map(nil)))
}

// Decision is what an event means. When Act is false, Reason says why not
// (for the 202 body and the log; fixed words, never caller data) and the
// other fields are empty.
type Decision struct {
	Act    bool
	Reason string
	ID     string // incident id (DESIGN §5), also the SQS message group
	Status string // FAILED, ERROR, PASSED or FIXED
	Job    bool   // a job incident rather than a build incident
}

func ignore(reason string) Decision { return Decision{Reason: reason} }

// Judge is what a build's branch and pull-request status are judged by
// against ALERT_BRANCHES and ALERT_PULL_REQUESTS: the build's own, or for a
// triggered build, its parent's (the first build up the trigger chain that
// was not itself triggered). The incident id keeps the build's own branch.
type Judge struct {
	Branch        string
	DefaultBranch string // of the judging build's pipeline; "" = main or master
	PullRequest   bool
	Parent        bool // the parent's, not the build's own (the reason says so)
}

// OwnJudge judges p by its own branch and pull request, as without the API.
func OwnJudge(p *buildkite.Payload) *Judge {
	if p.Build == nil {
		return &Judge{}
	}
	return &Judge{Branch: p.Build.Branch, DefaultBranch: defaultBranch(p), PullRequest: p.Build.IsPullRequest()}
}

// Triggered reports whether b was started by a trigger step of another
// build that the API can look up.
func Triggered(b *buildkite.Build) bool {
	return b != nil && b.TriggeredFrom != nil && b.TriggeredFrom.BuildPipelineSlug != "" && b.TriggeredFrom.BuildNumber > 0
}

// Classify decides whether p can open or resolve an incident. With
// TriggeredByParent, a triggered build passes the branch and pull-request
// checks, which its parent decides later (ClassifyAs).
func (r Rules) Classify(p *buildkite.Payload) Decision {
	var j *Judge
	if !r.TriggeredByParent || !Triggered(p.Build) {
		j = OwnJudge(p)
	}
	return r.classify(p, j)
}

// ClassifyAs is Classify with the branch and pull request judged by j (nil:
// the build's own); it never defers.
func (r Rules) ClassifyAs(p *buildkite.Payload, j *Judge) Decision {
	if j == nil {
		j = OwnJudge(p)
	}
	return r.classify(p, j)
}

// classify decides p; j nil leaves the branch and pull-request checks out.
func (r Rules) classify(p *buildkite.Payload, j *Judge) Decision {
	switch p.Event {
	case "build.finished", "build.failing", "job.finished":
	default:
		return ignore("event type never changes an incident")
	}
	if p.Build == nil {
		return ignore("event carries no build")
	}
	if p.Build.Blocked {
		return ignore("build is blocked, not finished")
	}
	pipeline := p.PipelineSlug()
	if pipeline == "" {
		return ignore("no pipeline slug in payload")
	}
	if !anyGlob(r.Pipelines, pipeline) {
		return ignore("pipeline not in ALERT_PIPELINES")
	}
	branch := p.Build.Branch
	if branch == "" {
		return ignore("build has no branch")
	}
	if j != nil {
		if !anyBranch(r.Branches, j.Branch, j.DefaultBranch) {
			if j.Parent {
				return ignore("triggered from a build whose branch is not in ALERT_BRANCHES")
			}
			return ignore("branch not in ALERT_BRANCHES")
		}
		// Whatever its branch is called: a fork's pull request from its own
		// "main" runs with branch "main" (or "owner:main"), and is not ours.
		if j.PullRequest && !r.PullRequests {
			if j.Parent {
				return ignore("triggered from a pull-request build (ALERT_PULL_REQUESTS)")
			}
			return ignore("pull-request builds do not alert (ALERT_PULL_REQUESTS)")
		}
	}
	if p.Event == "job.finished" {
		return r.classifyJob(p, pipeline, branch)
	}
	return r.classifyBuild(p, pipeline, branch)
}

func (r Rules) classifyBuild(p *buildkite.Payload, pipeline, branch string) Decision {
	var status string
	if p.Event == "build.failing" {
		if !r.OnFailing {
			return ignore("build.failing alerts are off (ALERT_ON_FAILING)")
		}
		// A webhook may carry a later state than its event: a build.failing
		// delivered after the build passed (or was canceled) must not page.
		if s := p.Build.State; s != "failing" && s != "failed" {
			return ignore("build.failing whose build is no longer failing")
		}
		status = StatusFailed
	} else {
		switch p.Build.State {
		case "failed":
			status = StatusFailed
		case "passed":
			status = StatusPassed
		case "canceled":
			if !r.OnCanceled {
				return ignore("canceled builds do not alert (ALERT_ON_CANCELED)")
			}
			status = StatusFailed
		default: // skipped, not_run, and anything not terminal
			return ignore("build state is not an outcome")
		}
	}
	return Decision{Act: true, ID: BuildID(p, pipeline, branch), Status: status}
}

func (r Rules) classifyJob(p *buildkite.Payload, pipeline, branch string) Decision {
	if !r.JobIncidents {
		return ignore("job incidents are off (JOB_INCIDENTS)")
	}
	j := p.Job
	if j == nil {
		return ignore("job event carries no job")
	}
	if j.Type != "" && j.Type != "script" && j.Type != "trigger" {
		return ignore("job type never fails on its own")
	}
	name := jobName(j) // the same name event.job carries
	if name == "" {
		return ignore("job has neither step key nor name")
	}
	var status string
	switch {
	case j.SoftFailed:
		return ignore("job soft-failed")
	case neverRan[j.State]:
		return ignore("job never ran (" + j.State + ")")
	case j.Retried:
		// Its retry (automatic or manual) follows and reports the outcome;
		// a failure an automatic retry absorbs is not a hard failure.
		return ignore("job was retried: its retry reports the outcome")
	case j.State == "passed" && (j.RetriesCount > 0 || j.RetrySource != nil):
		status = StatusFixed
	case j.State == "passed":
		status = StatusPassed
	case j.State == "timed_out" || j.State == "expired":
		// expired: no agent took the job in time. It never ran either, but
		// because capacity is missing, which someone must fix.
		status = StatusError
	case j.State == "failed" && (j.SignalReason != "" && j.SignalReason != "cancel" || j.ExitStatus != nil && *j.ExitStatus == -1):
		// The agent stopped, lost or refused the job (a lost agent shows
		// exit status -1): the command did not fail on its own.
		status = StatusError
	case j.State == "failed":
		status = StatusFailed
	default:
		return ignore("job state is not an outcome")
	}
	return Decision{Act: true, ID: BuildID(p, pipeline, branch) + "#" + name, Status: status, Job: true}
}

// jobName names a job in its incident id and event.job: step key, else
// name, else label.
func jobName(j *buildkite.Job) string {
	for _, s := range []string{j.StepKey, j.Name, j.Label} {
		if s != "" {
			return s
		}
	}
	return ""
}

// neverRan are the terminal job states of a job whose command never ran
// and that no one needs to act on (Buildkite's job states:
// https://buildkite.com/docs/pipelines/configure/defining-steps#job-states).
// broken: not run because of a condition or branch filter; skipped:
// skipped by a condition or a newer build; canceled/canceling: stopped by
// a person or by the build's cancellation, whose own event tells. The
// *_failed states belong to wait and block steps, whose type is never
// "script" anyway.
var neverRan = map[string]bool{
	"broken": true, "skipped": true, "canceled": true, "canceling": true,
	"waiting_failed": true, "blocked_failed": true, "unblocked_failed": true,
}

// BuildID is the build incident id: <org>/<pipeline>/<branch>.
func BuildID(p *buildkite.Payload, pipeline, branch string) string {
	return orgOrDefault(p) + "/" + pipeline + "/" + branch
}

// orgOrDefault is the org slug of DESIGN §5: from the URLs, else buildkite.
func orgOrDefault(p *buildkite.Payload) string {
	if o := p.OrgSlug(); o != "" {
		return o
	}
	return "buildkite"
}

func defaultBranch(p *buildkite.Payload) string {
	if p.Pipeline != nil && p.Pipeline.DefaultBranch != "" {
		return p.Pipeline.DefaultBranch
	}
	return ""
}

// anyGlob reports whether s matches one of the globs (ALERT_PIPELINES).
func anyGlob(globs []string, s string) bool {
	for _, g := range globs {
		if Glob(g, s) {
			return true
		}
	}
	return false
}

// anyBranch is anyGlob for ALERT_BRANCHES, where the word "default" (and
// only there, DESIGN §2) matches the pipeline's default branch def, or
// main/master when the payload names none.
func anyBranch(globs []string, branch, def string) bool {
	for _, g := range globs {
		if g == "default" {
			if def != "" && branch == def || def == "" && (branch == "main" || branch == "master") {
				return true
			}
			continue
		}
		if Glob(g, branch) {
			return true
		}
	}
	return false
}

// Glob matches s against a pattern where * is any run of characters
// (slashes included, unlike path.Match, because branch names hold them) and
// ? is any one character.
func Glob(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	if !isASCII(pattern) || !isASCII(s) {
		// ? is one character, not one byte: match runes.
		return glob([]rune(pattern), []rune(s))
	}
	return glob([]byte(pattern), []byte(s))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func glob[E byte | rune](pattern, s []E) bool {
	// Iterative wildcard match with single backtrack point: linear-ish, no recursion.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*': // before the literal test: a '*' in s is not a wildcard
			star, mark = p, i
			p++
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
