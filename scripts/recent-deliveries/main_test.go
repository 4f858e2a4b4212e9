package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2024, 8, 5, 12, 0, 0, 500_000_000, time.UTC)

// commandLines cuts the start-query command (with its continuation lines)
// out of the output.
func commandLines(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "aws logs start-query") {
			j := i
			for j < len(lines) && strings.HasSuffix(lines[j], " \\") {
				j++
			}
			return strings.Join(lines[i:j+1], "\n")
		}
	}
	t.Fatalf("no start-query command in:\n%s", out)
	return ""
}

// runShell runs the printed command with a fake aws on PATH that writes its
// arguments, NUL-separated, to a file: this proves the quoting survives a
// real shell.
func runShell(t *testing.T, command string) []string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$ARGS_FILE\"\n"
	if err := os.WriteFile(filepath.Join(dir, "aws"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", command)
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "ARGS_FILE="+argsFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh -c: %v\n%s\ncommand:\n%s", err, out, command)
	}
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

func TestPrintsRunnableCommand(t *testing.T) {
	end := now.Truncate(time.Second).Add(time.Second).Unix()
	tests := []struct {
		name      string
		args      []string
		logGroup  string
		since     time.Duration
		incident  string
		limit     int
		queryHas  []string
		queryLack []string
	}{
		{
			name: "stack defaults", args: []string{"-stack", "buildkite-sqibs"},
			logGroup: "/aws/lambda/buildkite-sqibs-dispatcher", since: time.Hour, limit: 100,
			queryLack: []string{"incident_id ="},
		},
		{
			name:     "log group, incident, since, limit",
			args:     []string{"-stack", "ignored", "-log-group", "/aws/lambda/x-dispatcher", "-since", "6h", "-incident", "acme/deploy-api/main", "-limit", "20"},
			logGroup: "/aws/lambda/x-dispatcher", since: 6 * time.Hour, incident: "acme/deploy-api/main", limit: 20,
			queryHas: []string{`| filter incident_id = "acme/deploy-api/main"`, "| limit 20"},
		},
		{
			// Branch names can hold quotes: the query and the shell quoting
			// both have to keep them literal.
			name:     "awkward incident id",
			args:     []string{"-stack", "s", "-incident", `acme/it's/"feat" \ x$(id)`},
			logGroup: "/aws/lambda/s-dispatcher", since: time.Hour, incident: `acme/it's/"feat" \ x$(id)`, limit: 100,
			queryHas: []string{`| filter incident_id = "acme/it's/\"feat\" \\ x$(id)"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runAt(now, tc.args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			out := stdout.String()
			q := Query(tc.incident, tc.limit)
			if !strings.Contains(out, "\n\n"+q+"\n\n") {
				t.Errorf("the query text is not printed on its own:\n%s", out)
			}
			for _, m := range deliveryMessages {
				if !strings.Contains(q, strconv.Quote(m)) {
					t.Errorf("query does not select %q", m)
				}
			}
			for _, s := range tc.queryHas {
				if !strings.Contains(q, s) {
					t.Errorf("query lacks %q:\n%s", s, q)
				}
			}
			for _, s := range tc.queryLack {
				if strings.Contains(q, s) {
					t.Errorf("query has %q:\n%s", s, q)
				}
			}
			got := runShell(t, commandLines(t, out))
			want := []string{"logs", "start-query", "--log-group-name", tc.logGroup,
				"--start-time", strconv.FormatInt(end-int64(tc.since/time.Second), 10), "--end-time", strconv.FormatInt(end, 10),
				"--query-string", strings.ReplaceAll(q, "\n", " ")}
			if !slices.Equal(got, want) {
				t.Errorf("the shell passes\n%q\nwant\n%q", got, want)
			}
			if !strings.Contains(out, "aws logs get-query-results --query-id <queryId>") {
				t.Errorf("no get-query-results hint:\n%s", out)
			}
		})
	}
}

// The query selects the dispatcher's own log messages: a reworded message
// there would silently empty the query's result.
func TestMessagesMatchTheDispatcher(t *testing.T) {
	src, err := os.ReadFile("../../internal/dispatcher/dispatcher.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range deliveryMessages {
		if !bytes.Contains(src, []byte(strconv.Quote(m))) {
			t.Errorf("internal/dispatcher no longer logs %q", m)
		}
	}
	for _, field := range []string{`"incident_id"`, `"status"`, `"sqibs_status"`, `"sqibs_id"`, `"latency_ms"`, `"retry_in_ms"`, `"request_id"`, `"message_id"`, `"error"`} {
		if !bytes.Contains(src, []byte(field)) {
			t.Errorf("internal/dispatcher no longer logs the field %s", field)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-since", "1h"},
		{"-stack", "s", "-since", "-1h"},
		{"-stack", "s", "-limit", "0"},
		{"-stack", "s", "-limit", "10001"},
		{"-stack", "s", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runAt(now, args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if stderr.Len() == 0 || stdout.Len() != 0 {
			t.Errorf("%v: stdout %q stderr %q: want only a message on stderr", args, stdout.String(), stderr.String())
		}
	}
}
