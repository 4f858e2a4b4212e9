package enrich

import (
	"context"
	"errors"
	"fmt"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/buildkiteapi"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
)

// MaxHops is how far up a chain of trigger steps Parent looks: a build
// triggered by a build that was itself triggered is judged by the first
// build that was not (a pull request triggering "deploy" triggering
// "smoke-test").
const MaxHops = 3

// Builds is the call Parent makes (satisfied by *buildkiteapi.Client).
type Builds interface {
	Build(ctx context.Context, org, pipeline string, number int64) (*buildkiteapi.Build, error)
}

// Origin is the build a triggered build is judged by.
type Origin struct {
	Pipeline      string // its pipeline slug
	Number        int64
	Branch        string
	DefaultBranch string // its pipeline's default branch; "" when the API did not say
	PullRequest   bool   // a pull-request build: pull_request with a non-empty id
	Hops          int    // trigger steps between it and the child; 1 = the direct parent
}

// ErrTriggerLoop means the chain of triggered_from came back to a build it
// had already visited, or went on past MaxHops.
var ErrTriggerLoop = errors.New("enrich: trigger chain too long or looping")

// Parent returns the build that started b through trigger steps, followed
// up to MaxHops, in org (a trigger step can only start pipelines of its own
// organization), spending at most Budget. ok is false, with no call made,
// when b was not triggered. On an error the caller judges b by its own
// branch, as without the API.
func Parent(ctx context.Context, api Builds, org string, b *buildkite.Build) (o Origin, ok bool, err error) {
	if !incident.Triggered(b) {
		return Origin{}, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, Budget)
	defer cancel()
	type ref struct {
		pipeline string
		number   int64
	}
	seen := map[ref]bool{}
	tf := b.TriggeredFrom
	for hop := 1; hop <= MaxHops; hop++ {
		r := ref{tf.BuildPipelineSlug, tf.BuildNumber}
		if seen[r] {
			break
		}
		seen[r] = true
		p, err := api.Build(ctx, org, r.pipeline, r.number)
		if err != nil {
			return Origin{}, false, fmt.Errorf("enrich: parent build %s/%s #%d: %w", org, r.pipeline, r.number, err)
		}
		o = Origin{Pipeline: r.pipeline, Number: r.number, Branch: p.Branch, PullRequest: p.IsPullRequest(), Hops: hop}
		if p.Pipeline != nil {
			o.DefaultBranch = p.Pipeline.DefaultBranch
			if p.Pipeline.Slug != "" {
				o.Pipeline = p.Pipeline.Slug
			}
		}
		if !incident.Triggered(&p.Build) {
			return o, true, nil
		}
		tf = p.TriggeredFrom
	}
	return Origin{}, false, ErrTriggerLoop
}
