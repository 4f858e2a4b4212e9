package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// The real binary, started as `make dev` starts it: it prints the ready
// line, takes a webhook, and on SIGTERM drains the queue and exits 0.
func TestDevServerBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the dev server")
	}
	bin := filepath.Join(t.TempDir(), "devserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DEV_ADDR=127.0.0.1:0", "SQIBS_SIM_ADDR=127.0.0.1:0", "BUILDKITE_SIM_ADDR=127.0.0.1:0",
		"BUILDKITE_WEBHOOK_TOKEN=", "WEBHOOK_TOKEN_SECRET_ARN=", "SQIBS_API_TOKEN=", "SQIBS_TOKEN_SECRET_ARN=",
		"QUEUE_URL=", "SQIBS_URL=", "BUILDKITE_API_TOKEN=", "BUILDKITE_API_TOKEN_SECRET_ARN=", "BUILDKITE_API_URL=", "RECONCILE_EVERY=")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var receiverURL, simURL string
	var printed []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		printed = append(printed, line)
		if strings.HasPrefix(line, "SQIBS simulator on ") {
			simURL = strings.Fields(line)[3]
		}
		if strings.HasPrefix(line, "receiver listening on ") {
			receiverURL = strings.TrimPrefix(line, "receiver listening on ")
			break
		}
	}
	if receiverURL == "" || simURL == "" {
		t.Fatalf("no ready line; stderr:\n%s", stderr.String())
	}
	rest := make(chan string, 1) // what it prints after the ready line
	go func() { b, _ := io.ReadAll(stdout); rest <- string(b) }()
	if got, want := ports(strings.Join(printed, "\n")), readmeStartup(t); got != want {
		t.Errorf("start-up lines differ from the README's Quick start:\ngot:\n%s\nREADME:\n%s", got, want)
	}

	body := testkit.Fixture(t, "build_finished_failed.json")
	req, _ := http.NewRequest("POST", receiverURL, bytes.NewReader(body))
	req.Header.Set("X-Buildkite-Signature", buildkite.Sign("local-webhook-token", time.Now(), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}

	// Stop at once: the queued event must still be delivered before exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var after string
	go func() {
		after = <-rest // read to EOF before Wait closes the pipe
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev server did not stop within 30s of SIGTERM")
	}
	// The in-process queue's dead letters are listed at exit: here, none.
	if !strings.Contains(after, "dead letters: none\n") {
		t.Errorf("stdout after the ready line = %q; want the dead letters listed (none)", after)
	}
	delivered := false
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("stderr line is not JSON: %q", line)
			continue
		}
		if m["msg"] == "delivered to SQIBS" {
			delivered = true
		}
	}
	if !delivered {
		t.Errorf("the queued webhook was not delivered before exit:\n%s", stderr.String())
	}
}

var port = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// ports makes the addresses comparable: the test listens on free ports.
func ports(s string) string { return port.ReplaceAllString(s, "127.0.0.1:PORT") }

// readmeStartup is the block the README's Quick start says `make dev` prints.
func readmeStartup(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "ending with the ready line:\n\n```\n")
	block, _, ok2 := strings.Cut(after, "\n```")
	if !ok || !ok2 {
		t.Fatal("README: no start-up block after \"ending with the ready line:\"")
	}
	return ports(block)
}
