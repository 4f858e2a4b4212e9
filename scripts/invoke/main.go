// Command invoke runs one Lambda function locally, without Docker: it builds
// the function's bootstrap for this machine, starts a local Runtime API
// (internal/local/runtimeapi), runs the bootstrap against it and sends one event.
//
//	go run ./scripts/invoke -fn receiver -event events/receiver-ping.json [-env events/env.json] [-timeout 10s]
//
// The function's response goes to stdout; everything the function writes
// (stdout and stderr) goes to stderr. Exit status: 0 on success, 1 when the
// function returned an error (its error JSON is printed on stdout), 2 when
// the invocation could not be made (usage, build, crash, init error, timeout).
//
// The environment file has `sam local invoke --env-vars` form:
// {"Parameters": {...for every function}, "ReceiverFunction": {...}}.
// The bootstrap's environment is, later winning: Lambda's defaults, this
// process's environment, "Parameters", then the function's own section.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/buildtags"
	"github.com/callgoose/buildkite-sqibs/internal/local/runtimeapi"
)

const (
	exitOK       = 0
	exitFnError  = 1
	exitFailure  = 2
	usageMessage = "usage: invoke -fn <name> -event <file.json> [-env events/env.json] [-timeout 10s] [-init-timeout 10s] [-pkg ./functions/<name> | -bootstrap <binary>]"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	fn          string
	event       string
	envFile     string
	timeout     time.Duration
	initTimeout time.Duration
	pkg         string
	bootstrap   string
}

var fnName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("invoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usageMessage); fs.PrintDefaults() }
	fs.StringVar(&o.fn, "fn", "", "function to run: receiver or dispatcher (package ./functions/<fn>)")
	fs.StringVar(&o.event, "event", "", "JSON event file to send")
	fs.StringVar(&o.envFile, "env", "", "environment file in `sam local invoke --env-vars` format")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "function timeout, counted from the hand-off of the event")
	fs.DurationVar(&o.initTimeout, "init-timeout", 10*time.Second, "how long the bootstrap may take to start (Lambda allows 10s)")
	fs.StringVar(&o.pkg, "pkg", "", "package to build instead of ./functions/<fn>")
	fs.StringVar(&o.bootstrap, "bootstrap", "", "run this prebuilt bootstrap instead of building one")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.fn == "":
		return o, errors.New("-fn is required")
	case !fnName.MatchString(o.fn):
		return o, fmt.Errorf("-fn %q: want a lower-case function name such as receiver", o.fn)
	case o.event == "":
		return o, errors.New("-event is required")
	case o.timeout <= 0 || o.initTimeout <= 0:
		return o, errors.New("-timeout and -init-timeout must be positive")
	case o.pkg != "" && o.bootstrap != "":
		return o, errors.New("-pkg and -bootstrap exclude each other")
	}
	if o.pkg == "" {
		o.pkg = "./functions/" + o.fn
	}
	return o, nil
}

// run is main without the process exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	// The bootstrap's two output streams and this command share stderr.
	stderr = &lockedWriter{w: stderr}
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "invoke: %v\n%s\n", err, usageMessage)
		return exitFailure
	}
	code, err := invoke(o, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "invoke: %v\n", err)
	}
	return code
}

func invoke(o options, stdout, stderr io.Writer) (int, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	event, err := os.ReadFile(o.event)
	if err != nil {
		return exitFailure, fmt.Errorf("read event: %w", err)
	}
	if !json.Valid(event) {
		return exitFailure, fmt.Errorf("event %s is not valid JSON", o.event)
	}
	logicalID := sectionKey(o.fn)
	env := append([]string{"AWS_LAMBDA_FUNCTION_NAME=" + logicalID}, os.Environ()...)
	if o.envFile != "" {
		fileEnv, found, err := loadEnvFile(o.envFile, logicalID)
		if err != nil {
			return exitFailure, err
		}
		if !found {
			fmt.Fprintf(stderr, "invoke: note: %s has no %q section; using \"Parameters\" only\n", o.envFile, logicalID)
		}
		env = append(env, fileEnv...)
	}

	bin := o.bootstrap
	if bin == "" {
		dir, err := os.MkdirTemp("", "invoke-"+o.fn+"-")
		if err != nil {
			return exitFailure, fmt.Errorf("temp dir: %w", err)
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "bootstrap")
		if err := build(ctx, o.pkg, bin, stderr); err != nil {
			return exitFailure, err
		}
	}

	srv, err := runtimeapi.Start()
	if err != nil {
		return exitFailure, err
	}
	defer srv.Close()
	firstNext, initErr := srv.FirstNext(), srv.InitError()
	// The function's stdout (logs, metrics) must not mix with the response.
	p, err := runtimeapi.Exec(ctx, bin, env, srv, stderr, stderr)
	if err != nil {
		return exitFailure, err
	}
	defer p.Stop()

	initTimer := time.NewTimer(o.initTimeout)
	defer initTimer.Stop()
	var ready time.Time
	select {
	case ready = <-firstNext:
	case body := <-initErr:
		return exitFailure, fmt.Errorf("%s init failed: %s", o.fn, oneLine(body))
	case <-p.Done():
		return exitFailure, fmt.Errorf("%s exited during init: %v", o.fn, p.Err())
	case <-initTimer.C:
		return exitFailure, fmt.Errorf("%s did not ask for an event within %s (init timeout)", o.fn, o.initTimeout)
	case <-ctx.Done():
		return exitFailure, errors.New("interrupted")
	}

	res, err := p.Invoke(ctx, event, o.timeout)
	if err != nil {
		switch {
		case errors.Is(err, runtimeapi.ErrTimeout):
			return exitFailure, fmt.Errorf("%s timed out after %s", o.fn, o.timeout)
		case ctx.Err() != nil:
			return exitFailure, errors.New("interrupted")
		}
		return exitFailure, fmt.Errorf("%s: %w", o.fn, err)
	}
	fmt.Fprintf(stderr, "REPORT RequestId: %s\tInit Duration: %.2f ms\tDuration: %.2f ms\tMax Memory Used: %d MB\n",
		res.RequestID, ms(ready.Sub(p.Started())), ms(res.Duration), (p.PeakRSS()+(1<<20)-1)>>20)

	if res.Err != nil {
		writeLine(stdout, res.Err.JSON())
		fmt.Fprintf(stderr, "invoke: %s returned an error: %s: %s\n", o.fn, res.Err.Type, res.Err.Message)
		return exitFnError, nil
	}
	writeLine(stdout, res.Payload)
	return exitOK, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func writeLine(w io.Writer, b []byte) {
	_, _ = w.Write(b)
	if !bytes.HasSuffix(b, []byte("\n")) {
		_, _ = io.WriteString(w, "\n")
	}
}

// build compiles pkg for this machine the way the deployed bootstrap is
// built (minus the cross-compilation), so the function runs here natively.
func build(ctx context.Context, pkg, out string, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", buildtags.Lambda, "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return nil
}

// sectionKey maps a function's directory name to its template logical ID,
// the key of its section in the environment file: receiver → ReceiverFunction.
func sectionKey(fn string) string {
	return strings.ToUpper(fn[:1]) + fn[1:] + "Function"
}

// loadEnvFile reads a `sam local invoke --env-vars` file and returns the
// variables for logicalID as KEY=value, "Parameters" first so the
// function's own section wins; found says whether that section exists.
// Values may be strings, numbers or booleans; null leaves a variable unset.
// Errors name variables, never their values, which may be secrets.
func loadEnvFile(path, logicalID string) (env []string, found bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("read env file: %w", err)
	}
	env, found, err = parseEnv(b, logicalID)
	if err != nil {
		return nil, false, fmt.Errorf("env file %s: %w", path, err)
	}
	return env, found, nil
}

// parseEnv is loadEnvFile on the file's bytes.
func parseEnv(b []byte, logicalID string) (env []string, found bool, err error) {
	var file map[string]json.RawMessage
	if err := json.Unmarshal(b, &file); err != nil {
		return nil, false, fmt.Errorf("want a JSON object of sections: %w", err)
	}
	for _, section := range []string{"Parameters", logicalID} {
		raw, ok := file[section]
		if !ok {
			continue
		}
		if section == logicalID {
			found = true
		}
		vars, err := sectionVars(raw)
		if err != nil {
			return nil, false, fmt.Errorf("section %q: %w", section, err)
		}
		env = append(env, vars...)
	}
	return env, found, nil
}

func sectionVars(raw json.RawMessage) ([]string, error) {
	var vars map[string]json.RawMessage
	if err := json.Unmarshal(raw, &vars); err != nil || vars == nil {
		return nil, errors.New("want an object of VARIABLE: value")
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names) // deterministic order for a deterministic environment
	env := make([]string, 0, len(names))
	for _, name := range names {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return nil, fmt.Errorf("variable name %q is not valid", name)
		}
		v, set, err := envValue(vars[name])
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", name, err)
		}
		if set {
			env = append(env, name+"="+v)
		}
	}
	return env, nil
}

// envValue turns a JSON scalar into the string the variable holds.
func envValue(raw json.RawMessage) (value string, set bool, err error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case bytes.Equal(raw, []byte("null")):
		return "", false, nil
	case bytes.HasPrefix(raw, []byte(`"`)):
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, errors.New("bad string")
		}
		if strings.ContainsRune(s, 0) {
			return "", false, errors.New("value contains a NUL byte")
		}
		return s, true, nil
	case bytes.Equal(raw, []byte("true")), bytes.Equal(raw, []byte("false")):
		return string(raw), true, nil
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		return string(raw), true, nil // a JSON number, as written
	}
	return "", false, errors.New("want a string, number or boolean")
}

func oneLine(body []byte) string {
	var fe runtimeapi.FunctionError
	if json.Unmarshal(body, &fe) == nil && (fe.Type != "" || fe.Message != "") {
		return fe.Type + ": " + fe.Message
	}
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
