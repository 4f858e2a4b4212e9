package buildkitesim

import (
	"cmp"
	"encoding/base64"
	"strconv"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

// The response shapes of Buildkite's "Get a build" and "List builds for a
// pipeline" examples (builds.md): every key, null where the simulator has
// nothing to say.

type shape struct{ jobs, pipeline, retried, counts bool }

type apiBuild struct {
	ID             string                   `json:"id"`
	GraphQLID      string                   `json:"graphql_id"`
	URL            string                   `json:"url"`
	WebURL         string                   `json:"web_url"`
	Number         int64                    `json:"number"`
	State          string                   `json:"state"`
	CancelReason   *string                  `json:"cancel_reason"`
	Blocked        bool                     `json:"blocked"`
	Message        string                   `json:"message"`
	Commit         string                   `json:"commit"`
	Branch         string                   `json:"branch"`
	Env            map[string]string        `json:"env"`
	Source         string                   `json:"source"`
	Author         *author                  `json:"author,omitempty"`
	Creator        creator                  `json:"creator"`
	Jobs           *[]apiJob                `json:"jobs,omitempty"`
	JobStateCounts *jobStateCounts          `json:"job_state_counts,omitempty"`
	CreatedAt      *string                  `json:"created_at"`
	ScheduledAt    *string                  `json:"scheduled_at"`
	StartedAt      *string                  `json:"started_at"`
	FailingAt      *string                  `json:"failing_at"`
	FinishedAt     *string                  `json:"finished_at"`
	MetaData       map[string]string        `json:"meta_data"`
	PullRequest    map[string]string        `json:"pull_request"`
	MergeQueue     any                      `json:"merge_queue"`
	RebuiltFrom    *buildRef                `json:"rebuilt_from"`
	TriggeredFrom  *buildkite.TriggeredFrom `json:"triggered_from,omitempty"`
	Pipeline       *apiPipeline             `json:"pipeline,omitempty"`
}

type author struct {
	Name     string `json:"name,omitempty"`
	Username string `json:"username,omitempty"`
}

// creator is made up (see the package comment): webhooks' trimmed payloads
// keep no creator.
type creator struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	AvatarURL string `json:"avatar_url"`
	CreatedAt string `json:"created_at"`
}

var simCreator = creator{
	ID: "3d3c3bf0-7d58-4afe-8fe7-b3017d5504de", Name: "Simulated Creator", Email: "creator@example.com",
	AvatarURL: "https://www.gravatar.com/avatar/00000000000000000000000000000000", CreatedAt: "2015-05-22T12:36:45.309Z",
}

type jobStateCounts struct {
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
}

type buildRef struct {
	ID     string `json:"id"`
	Number int64  `json:"number"`
	URL    string `json:"url"`
}

type apiJob struct {
	ID                 string                 `json:"id"`
	GraphQLID          string                 `json:"graphql_id"`
	Type               string                 `json:"type"`
	Name               *string                `json:"name"`
	StepKey            *string                `json:"step_key"`
	GroupKey           *string                `json:"group_key"`
	Step               any                    `json:"step"`
	AgentQueryRules    []string               `json:"agent_query_rules"`
	State              string                 `json:"state"`
	WebURL             string                 `json:"web_url"`
	LogURL             string                 `json:"log_url"`
	RawLogURL          string                 `json:"raw_log_url"`
	Command            *string                `json:"command"`
	SoftFailed         bool                   `json:"soft_failed"`
	ExitStatus         *int                   `json:"exit_status"`
	SignalReason       *string                `json:"signal_reason"`
	ArtifactPaths      string                 `json:"artifact_paths"`
	Agent              any                    `json:"agent"`
	CreatedAt          *string                `json:"created_at"`
	ScheduledAt        *string                `json:"scheduled_at"`
	RunnableAt         *string                `json:"runnable_at"`
	StartedAt          *string                `json:"started_at"`
	FinishedAt         *string                `json:"finished_at"`
	Retried            bool                   `json:"retried"`
	RetriedInJobID     *string                `json:"retried_in_job_id"`
	RetriesCount       *int                   `json:"retries_count"`
	RetrySource        *buildkite.RetrySource `json:"retry_source"`
	RetryType          *string                `json:"retry_type"`
	ParallelGroupIndex *int                   `json:"parallel_group_index"`
	ParallelGroupTotal *int                   `json:"parallel_group_total"`
	Matrix             any                    `json:"matrix"`
	ClusterID          *string                `json:"cluster_id"`
	ClusterURL         *string                `json:"cluster_url"`
	ClusterQueueID     *string                `json:"cluster_queue_id"`
	ClusterQueueURL    *string                `json:"cluster_queue_url"`
}

type apiPipeline struct {
	ID                              string   `json:"id"`
	GraphQLID                       string   `json:"graphql_id"`
	URL                             string   `json:"url"`
	WebURL                          string   `json:"web_url"`
	Name                            string   `json:"name"`
	Slug                            string   `json:"slug"`
	Repository                      *string  `json:"repository"`
	DefaultBranch                   *string  `json:"default_branch"`
	Provider                        provider `json:"provider"`
	SkipQueuedBranchBuilds          bool     `json:"skip_queued_branch_builds"`
	SkipQueuedBranchBuildsFilter    *string  `json:"skip_queued_branch_builds_filter"`
	CancelRunningBranchBuilds       bool     `json:"cancel_running_branch_builds"`
	CancelRunningBranchBuildsFilter *string  `json:"cancel_running_branch_builds_filter"`
	BuildsURL                       string   `json:"builds_url"`
	BadgeURL                        string   `json:"badge_url"`
	CreatedAt                       *string  `json:"created_at"`
	ScheduledBuilds                 int      `json:"scheduled_builds_count"`
	RunningBuilds                   int      `json:"running_builds_count"`
	ScheduledJobs                   int      `json:"scheduled_jobs_count"`
	RunningJobs                     int      `json:"running_jobs_count"`
	WaitingJobs                     int      `json:"waiting_jobs_count"`
}

// provider: the docs say webhook_url is "" without the write_pipelines scope,
// which a bridge's read_builds token never has.
type provider struct {
	ID         string `json:"id"`
	WebhookURL string `json:"webhook_url"`
}

const apiBase = "https://api.buildkite.com/v2"

func ts(t buildkite.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.String()
	return &s
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func graphQLID(kind, id string) string {
	return base64.StdEncoding.EncodeToString([]byte(kind + "---" + id))
}

// render must be called with s.mu held.
func (s *Server) render(pk pipelineKey, rec *record, o shape) apiBuild {
	b := &rec.build
	pipeAPI := apiBase + "/organizations/" + pk.org + "/pipelines/" + pk.pipeline
	webURL := cmp.Or(b.WebURL, "https://buildkite.com/"+pk.org+"/"+pk.pipeline+"/builds/"+strconv.FormatInt(b.Number, 10))
	out := apiBuild{
		ID: b.ID, GraphQLID: graphQLID("Build", b.ID), Number: b.Number, State: b.State, Blocked: b.Blocked,
		URL:     cmp.Or(b.URL, pipeAPI+"/builds/"+strconv.FormatInt(b.Number, 10)),
		WebURL:  webURL,
		Message: b.Message, Commit: b.Commit, Branch: b.Branch, Env: map[string]string{}, Source: cmp.Or(b.Source, "webhook"),
		Creator: simCreator, CreatedAt: ts(b.CreatedAt), ScheduledAt: ts(b.CreatedAt), StartedAt: ts(b.StartedAt),
		FailingAt: ts(b.FailingAt), FinishedAt: ts(b.FinishedAt), MetaData: map[string]string{},
		PullRequest: map[string]string{}, TriggeredFrom: b.TriggeredFrom,
	}
	if b.Author != nil {
		out.Author = &author{Name: b.Author.Name, Username: b.Author.Username}
	}
	if b.IsPullRequest() {
		out.PullRequest = map[string]string{"id": string(b.PullRequest.ID), "base": b.PullRequest.Base}
	}
	if r := b.RebuiltFrom; r != nil && r.Number > 0 {
		out.RebuiltFrom = &buildRef{ID: r.ID, Number: r.Number, URL: pipeAPI + "/builds/" + strconv.FormatInt(r.Number, 10)}
	}
	var jobs []apiJob
	counts := map[string]int{}
	for i := range rec.jobs {
		j := &rec.jobs[i]
		if j.Retried && !o.retried {
			continue
		}
		counts[j.State]++
		jobs = append(jobs, renderJob(j, webURL, out.URL))
	}
	if o.jobs {
		if jobs == nil {
			jobs = []apiJob{}
		}
		out.Jobs = &jobs
	}
	if o.counts {
		out.JobStateCounts = &jobStateCounts{Total: len(jobs), States: counts}
	}
	if o.pipeline {
		p := s.pipelines[pk]
		out.Pipeline = &apiPipeline{
			ID: p.ID, GraphQLID: graphQLID("Pipeline", p.ID), URL: pipeAPI, WebURL: "https://buildkite.com/" + pk.org + "/" + pk.pipeline,
			Name: cmp.Or(p.Name, p.Slug), Slug: p.Slug, DefaultBranch: orNull(p.DefaultBranch), Provider: provider{ID: "github"},
			BuildsURL: pipeAPI + "/builds", BadgeURL: "https://badge.buildkite.com/simulated.svg",
		}
	}
	return out
}

func renderJob(j *buildkite.Job, buildWebURL, buildAPIURL string) apiJob {
	out := apiJob{
		ID: j.ID, GraphQLID: graphQLID("Job", j.ID), Type: cmp.Or(j.Type, "script"),
		Name: orNull(cmp.Or(j.Name, j.Label)), StepKey: orNull(j.StepKey), AgentQueryRules: []string{},
		State: j.State, WebURL: cmp.Or(j.WebURL, buildWebURL+"#"+j.ID),
		LogURL: buildAPIURL + "/jobs/" + j.ID + "/log", RawLogURL: buildAPIURL + "/jobs/" + j.ID + "/log.txt",
		SoftFailed: j.SoftFailed, ExitStatus: j.ExitStatus, SignalReason: orNull(j.SignalReason),
		CreatedAt: ts(j.StartedAt), ScheduledAt: ts(j.StartedAt), RunnableAt: ts(j.StartedAt),
		StartedAt: ts(j.StartedAt), FinishedAt: ts(j.FinishedAt), Retried: j.Retried,
		RetrySource: j.RetrySource, ParallelGroupIndex: j.ParallelGroupIndex, ParallelGroupTotal: j.ParallelGroupTotal,
	}
	if j.RetriesCount > 0 {
		n := j.RetriesCount
		out.RetriesCount = &n
	}
	if j.RetrySource != nil {
		out.RetryType = orNull(j.RetrySource.RetryType)
	}
	return out
}
