// Command incidents lists the open incidents of the dispatcher's incident
// state table (DESIGN §5b): id, since when, consecutive failed builds, the
// failing jobs of a step incident, and the last build's URL.
//
//	go run ./scripts/incidents -table <StateTableName output> [-json] [-create]
//
// AWS credentials, region and profile come from the usual AWS environment;
// AWS_ENDPOINT_URL_DYNAMODB reaches moto or LocalStack.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/callgoose/buildkite-sqibs/internal/state/dynamo"
)

const usage = `usage: incidents [-table <name>] [-json] [-create]

Lists the open incidents in the incident state table (the stack output
StateTableName; default $STATE_TABLE), oldest first. -create first creates
the table as the stack does, for make dev against moto or LocalStack.`

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

// incident is one line of the listing, and its -json shape.
type incident struct {
	ID                  string    `json:"id"`
	Since               time.Time `json:"since"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	FailingJobs         []string  `json:"failing_jobs"`
	LastStatus          string    `json:"last_status"`
	LastBuildURL        string    `json:"last_build_url"`
}

// run is main without the exit. Exit codes: 0 listed, 1 the table could not
// be read, 2 usage.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("incidents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	table := fs.String("table", getenv("STATE_TABLE"), "incident state table (stack output StateTableName)")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	timeout := fs.Duration("timeout", time.Minute, "time allowed for the listing")
	create := fs.Bool("create", false, "create the table first (local emulators; in AWS the stack creates it)")
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *table == "" || *timeout <= 0 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "incidents: load AWS config:", err)
		return 1
	}
	client := dynamo.NewClient(cfg)
	if *create {
		if err := dynamo.CreateTable(ctx, client, *table); err != nil {
			fmt.Fprintln(stderr, "incidents:", err)
			return 1
		}
	}
	items, err := dynamo.New(client, *table).ListOpen(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "incidents:", err)
		return 1
	}
	list := make([]incident, 0, len(items))
	for _, it := range items {
		jobs := append([]string{}, it.FailingJobs()...) // [] in JSON, never null
		slices.Sort(jobs)
		list = append(list, incident{
			ID: it.ID, Since: it.OpenedAt, ConsecutiveFailures: it.Failures, FailingJobs: jobs,
			LastStatus: it.LastStatus, LastBuildURL: it.LastURL,
		})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			fmt.Fprintln(stderr, "incidents:", err)
			return 1
		}
		return 0
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSINCE\tFAILURES\tFAILING JOBS\tLAST BUILD")
	for _, in := range list {
		jobs := strings.Join(in.FailingJobs, ", ")
		if jobs == "" {
			jobs = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", in.ID, in.Since.UTC().Format(time.RFC3339), in.ConsecutiveFailures, jobs, in.LastBuildURL)
	}
	_ = w.Flush()
	fmt.Fprintf(stdout, "%d open incident(s) in %s\n", len(list), *table)
	return 0
}
