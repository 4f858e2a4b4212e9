// Command recent-deliveries prints a CloudWatch Logs Insights query over
// the dispatcher's log group that lists recent SQIBS deliveries (delivered,
// retried, rejected), and the ready-to-paste AWS CLI command that runs it.
//
//	go run ./scripts/recent-deliveries -stack buildkite-sqibs [-since 1h] [-incident acme/deploy-api/main]
//	go run ./scripts/recent-deliveries -log-group /aws/lambda/buildkite-sqibs-dispatcher
//
// It does not run the query itself: that needs the CloudWatch Logs SDK
// module, which the functions do not use and the project does not carry.
// Paste the printed command into a shell with AWS credentials (or paste the
// query into the CloudWatch Logs Insights console).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

const usage = `usage: recent-deliveries (-stack <stack name> | -log-group <name>) [-since 1h] [-incident <id>] [-limit 100]

Prints a CloudWatch Logs Insights query listing the dispatcher's recent SQIBS
deliveries (delivered, failed and retried, rejected to the DLQ) and the
aws logs start-query / get-query-results commands that run it.`

// The dispatcher's log messages (internal/dispatcher), one per delivery attempt.
var deliveryMessages = []string{
	"delivered to SQIBS",
	"SQIBS delivery failed: will retry",
	"SQIBS rejected the incident: sending it to the dead-letter queue",
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return runAt(time.Now(), args, stdout, stderr)
}

type options struct {
	logGroup string
	since    time.Duration
	incident string
	limit    int
}

// runAt is run with the clock given, for tests. Exit codes: 0, or 2 for usage.
func runAt(now time.Time, args []string, stdout, stderr io.Writer) int {
	var o options
	var stack string
	fs := flag.NewFlagSet("recent-deliveries", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&stack, "stack", "", "CloudFormation stack name: the log group is /aws/lambda/<stack>-dispatcher")
	fs.StringVar(&o.logGroup, "log-group", "", "the dispatcher's log group (stack output DispatcherLogGroupName); overrides -stack")
	fs.DurationVar(&o.since, "since", time.Hour, "how far back to look (Go duration: 30m, 6h, 72h)")
	fs.StringVar(&o.incident, "incident", "", "only this incident id, e.g. acme/deploy-api/main")
	fs.IntVar(&o.limit, "limit", 100, "most rows returned (1 to 10000)")
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.logGroup == "" && stack != "" {
		o.logGroup = "/aws/lambda/" + stack + "-dispatcher"
	}
	switch {
	case fs.NArg() > 0 || o.logGroup == "":
		fs.Usage()
		return 2
	case o.since <= 0:
		fmt.Fprintln(stderr, "recent-deliveries: -since must be a positive duration")
		return 2
	case o.limit < 1 || o.limit > 10000:
		fmt.Fprintln(stderr, "recent-deliveries: -limit must be from 1 to 10000")
		return 2
	}

	end := now.Truncate(time.Second).Add(time.Second) // include the current second
	start := end.Add(-o.since)
	q := Query(o.incident, o.limit)
	fmt.Fprintf(stdout, "# CloudWatch Logs Insights query for %s, %s to %s UTC:\n\n%s\n\n",
		o.logGroup, start.UTC().Format(time.DateTime), end.UTC().Format(time.DateTime), q)
	fmt.Fprintf(stdout, "# Run it (the times are fixed now; run this tool again for a later window):\n%s\n",
		Command(o.logGroup, start, end, q))
	fmt.Fprintf(stdout, "# Then fetch the rows with the queryId it prints (repeat until \"status\" is \"Complete\"):\n"+
		"aws logs get-query-results --query-id <queryId>\n")
	return 0
}

// Query is the Logs Insights query: one row per delivery attempt, newest
// first. Durations are logged in milliseconds (latency_ms, retry_in_ms).
func Query(incident string, limit int) string {
	msgs := make([]string, len(deliveryMessages))
	for i, m := range deliveryMessages {
		msgs[i] = quote(m)
	}
	lines := []string{
		"fields @timestamp, msg, incident_id, status, sqibs_status, sqibs_id, latency_ms, retry_in_ms, request_id, function_request_id, message_id, error",
		"| filter msg in [" + strings.Join(msgs, ", ") + "]",
	}
	if incident != "" {
		lines = append(lines, "| filter incident_id = "+quote(incident))
	}
	lines = append(lines, "| sort @timestamp desc", "| limit "+strconv.Itoa(limit))
	return strings.Join(lines, "\n")
}

// quote is a Logs Insights string literal.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Command is the aws logs start-query command line, POSIX-shell quoted.
// The query goes on one line so the command can be copied as a block.
func Command(logGroup string, start, end time.Time, query string) string {
	return strings.Join([]string{
		"aws logs start-query",
		"  --log-group-name " + shellQuote(logGroup),
		"  --start-time " + strconv.FormatInt(start.Unix(), 10) + " --end-time " + strconv.FormatInt(end.Unix(), 10),
		"  --query-string " + shellQuote(strings.ReplaceAll(query, "\n", " ")),
	}, " \\\n")
}

// shellQuote wraps s in single quotes, which keep everything literal in a
// POSIX shell; each single quote inside becomes quote, backslash, quote,
// quote (close, escaped quote, reopen).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
