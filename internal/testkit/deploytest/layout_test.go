package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/local/buildtags"
)

const module = "github.com/callgoose/buildkite-sqibs/"

// goList runs the go command in the repository root.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = templateDir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// No bootstrap links a local stand-in or test support: what ships and what
// does not are apart in the tree, and stay apart in the binaries.
func TestFunctionsShipNoLocalPackage(t *testing.T) {
	fns, err := filepath.Glob(filepath.Join(templateDir, "functions", "*", "main.go"))
	if err != nil || len(fns) < 3 {
		t.Fatalf("functions: %v %v", fns, err)
	}
	for _, f := range fns {
		fn := "./functions/" + filepath.Base(filepath.Dir(f))
		var internal int
		for _, dep := range goList(t, "-deps", "-tags", buildtags.Lambda, fn) {
			// The receiver keeps no incident state: the DynamoDB client
			// (0.85 MB and a millisecond of start) is the dispatcher's and
			// the reconciler's alone.
			if fn == "./functions/receiver" && strings.HasPrefix(dep, "github.com/aws/aws-sdk-go-v2/service/dynamodb") {
				t.Errorf("%s links %s", fn, dep)
			}
			rel, ok := strings.CutPrefix(dep, module)
			if !ok {
				continue
			}
			internal++
			if strings.HasPrefix(rel, "internal/local/") || rel == "internal/testkit" || strings.HasPrefix(rel, "internal/testkit/") {
				t.Errorf("%s links %s", fn, rel)
			}
		}
		if internal < 5 {
			t.Errorf("%s: %d packages of this module in its deps; the check found nothing to check", fn, internal)
		}
	}
}

// The README's Layout names every package and command, so the front door
// shows the whole house.
func TestReadmeLayoutNamesEveryPackage(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(templateDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "\n## Layout\n")
	block := regexp.MustCompile("(?s)```\n(.*?)\n```").FindStringSubmatch(after)
	if !ok || block == nil {
		t.Fatal("README: no ## Layout section with a fenced block")
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(block[1], "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			listed[f[0]] = true
		}
	}
	var dirs []string
	for _, pkg := range goList(t, "./...") {
		dirs = append(dirs, strings.TrimPrefix(pkg, module))
	}
	// Nested modules (scripts/vulncheck) are outside ./...: every command
	// directory counts.
	cmds, _ := filepath.Glob(filepath.Join(templateDir, "scripts", "*", "*.go"))
	for _, c := range cmds {
		dirs = append(dirs, "scripts/"+filepath.Base(filepath.Dir(c)))
	}
	for _, d := range dirs {
		if !listed[d] {
			t.Errorf("README's Layout does not name %s", d)
		}
	}
	for d := range listed {
		if strings.Contains(d, "/") {
			if _, err := os.Stat(filepath.Join(templateDir, d)); err != nil {
				t.Errorf("README's Layout names %s, which does not exist", d)
			}
		}
	}
}
