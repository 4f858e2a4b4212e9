// Package testkit holds helpers shared by tests of the runnable binaries.
package testkit

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/buildtags"
)

// BuildMain builds the main package in dir (".": the caller's) for this
// machine, with the Lambda build tags, and returns the binary's path.
func BuildMain(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-tags", buildtags.Lambda, "-o", bin, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, out)
	}
	return bin
}

// ExpectConfigExit runs bin with only env (plus PATH/HOME) and asserts what
// DESIGN §2 promises for bad configuration: exit status 1 and exactly one
// line on stderr, a JSON log record whose message contains want.
func ExpectConfigExit(t *testing.T, bin string, env []string, want string) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true"}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("exit: %v, want status 1 (stderr %q)", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("did not exit on bad configuration")
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line on stderr, got %d: %q", len(lines), stderr.String())
	}
	var rec struct{ Level, Msg string }
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Level != "ERROR" || !strings.Contains(rec.Msg, want) {
		t.Errorf("stderr line %q: want an ERROR record mentioning %q", lines[0], want)
	}
}
