package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// helloPkg is runtimeapi's echo function (see its main.go for the inputs
// that make it fail, panic, exit or sleep).
const helloPkg = "../../internal/local/runtimeapi/testdata/hello"

var hello struct {
	once sync.Once
	dir  string
	err  error
	log  bytes.Buffer
}

func TestMain(m *testing.M) {
	code := m.Run()
	if hello.dir != "" {
		_ = os.RemoveAll(hello.dir)
	}
	os.Exit(code)
}

// helloBootstrap builds hello once with the command's own build step.
func helloBootstrap(t *testing.T) string {
	t.Helper()
	hello.once.Do(func() {
		hello.dir, hello.err = os.MkdirTemp("", "invoke-test-")
		if hello.err == nil {
			hello.err = build(context.Background(), helloPkg, filepath.Join(hello.dir, "bootstrap"), &hello.log)
		}
	})
	if hello.err != nil {
		t.Fatalf("%v\n%s", hello.err, hello.log.String())
	}
	return filepath.Join(hello.dir, "bootstrap")
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBuildsAndEchoes(t *testing.T) {
	code, stdout, stderr := runCmd(t, "-fn", "hello", "-pkg", helloPkg, "-event", "testdata/echo.json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if want := `{"hello":"world","list":[1,2,3]}` + "\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, "REPORT RequestId: ") || !strings.Contains(stderr, "Max Memory Used: ") {
		t.Errorf("stderr has no REPORT line:\n%s", stderr)
	}
}

func TestInvocationOutcomes(t *testing.T) {
	bin := helloBootstrap(t)
	tests := []struct {
		name       string
		event      string
		envFile    string // contents; "" for none
		extra      []string
		wantCode   int
		wantStdout string // exact, when set
		stdoutJSON bool   // stdout must be one JSON document
		wantStderr []string
	}{
		{
			name: "success", event: `{"ok":true}`,
			wantCode: exitOK, wantStdout: `{"ok":true}` + "\n",
		},
		{
			name: "function error", event: `{"fail":true}`,
			wantCode: exitFnError, wantStdout: `{"errorMessage":"asked to fail","errorType":"errorString"}` + "\n",
			wantStderr: []string{"invoke: hello returned an error: errorString: asked to fail"},
		},
		{
			name: "panic is a function error", event: `{"panic":true}`,
			wantCode: exitFnError, stdoutJSON: true,
			wantStderr: []string{"invoke: hello returned an error: string: asked to panic"},
		},
		{
			name: "exit without answering", event: `{"exit":true}`,
			wantCode: exitFailure, wantStdout: "",
			wantStderr: []string{"invoke: hello: request ", ": bootstrap exited before answering (exit status 3: hello: asked to exit)\n"},
		},
		{
			name: "crash during init", event: `{}`,
			envFile:  `{"HelloFunction":{"HELLO_INIT_FAIL":"1"}}`,
			wantCode: exitFailure, wantStdout: "",
			wantStderr: []string{"invoke: hello exited during init: exit status 4: hello: init failed on purpose"},
		},
		{
			name: "timeout", event: `{"sleep_ms":30000}`, extra: []string{"-timeout", "100ms"},
			wantCode: exitFailure, wantStdout: "",
			wantStderr: []string{"invoke: hello timed out after 100ms"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"-fn", "hello", "-bootstrap", bin, "-event", writeFile(t, "event.json", tt.event)}
			if tt.envFile != "" {
				args = append(args, "-env", writeFile(t, "env.json", tt.envFile))
			}
			code, stdout, stderr := runCmd(t, append(args, tt.extra...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if tt.stdoutJSON {
				if !json.Valid([]byte(stdout)) || strings.Count(stdout, "\n") != 1 {
					t.Errorf("stdout is not one JSON line: %q", stdout)
				}
			} else if stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tt.wantStdout)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestEnvironmentPrecedence(t *testing.T) {
	bin := helloBootstrap(t)
	t.Setenv("GREETING", "from-caller") // the file overrides the caller
	t.Setenv("UNSET_ME", "from-caller") // null in the file leaves it alone
	t.Setenv("CALLER_ONLY", "from-caller")
	t.Setenv("AWS_LAMBDA_RUNTIME_API", "192.0.2.1:9") // never passed on
	tests := []struct{ variable, want string }{
		{"GREETING", "from-hello"},
		{"SHARED", "shared-value"},
		{"SIZE", "128"},
		{"DEBUG", "false"},
		{"UNSET_ME", "from-caller"},
		{"CALLER_ONLY", "from-caller"},
		{"AWS_REGION", "eu-central-1"},
		{"AWS_LAMBDA_FUNCTION_NAME", "HelloFunction"},
		{"AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"},
	}
	for _, tt := range tests {
		t.Run(tt.variable, func(t *testing.T) {
			event := writeFile(t, "event.json", `{"env":"`+tt.variable+`"}`)
			code, stdout, stderr := runCmd(t, "-fn", "hello", "-bootstrap", bin, "-env", "testdata/env.json", "-event", event)
			if code != exitOK {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr)
			}
			var got struct {
				V string `json:"env_value"`
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.V != tt.want {
				t.Errorf("%s = %q (stdout %q), want %q", tt.variable, got.V, stdout, tt.want)
			}
		})
	}
}

func TestMissingSectionIsANote(t *testing.T) {
	bin := helloBootstrap(t)
	event := writeFile(t, "event.json", `{"env":"GREETING"}`)
	code, stdout, stderr := runCmd(t, "-fn", "dispatcher", "-bootstrap", bin, "-env", "testdata/env.json", "-event", event)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if stdout != `{"env_value":"from-parameters"}`+"\n" {
		t.Errorf("stdout = %q, want Parameters' GREETING", stdout)
	}
	if !strings.Contains(stderr, `has no "DispatcherFunction" section`) {
		t.Errorf("stderr lacks the note:\n%s", stderr)
	}
}

func TestUsageAndSetupFailures(t *testing.T) {
	event := writeFile(t, "event.json", `{}`)
	secretEnv := writeFile(t, "env.json", `{"HelloFunction":{"TOKEN":{"value":"s3cr3t-value"}}}`)
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"no arguments", nil, "invoke: -fn is required"},
		{"no event", []string{"-fn", "receiver"}, "invoke: -event is required"},
		{"bad function name", []string{"-fn", "../receiver", "-event", event}, `invoke: -fn "../receiver"`},
		{"stray argument", []string{"-fn", "receiver", "-event", event, "extra"}, `invoke: unexpected argument "extra"`},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined: -nope"},
		{"help", []string{"-h"}, "usage: invoke"},
		{"bad timeout", []string{"-fn", "receiver", "-event", event, "-timeout", "0s"}, "must be positive"},
		{"pkg and bootstrap", []string{"-fn", "receiver", "-event", event, "-pkg", "x", "-bootstrap", "y"}, "exclude each other"},
		{"missing event file", []string{"-fn", "receiver", "-event", "testdata/nope.json"}, "invoke: read event: open testdata/nope.json"},
		{"event not JSON", []string{"-fn", "receiver", "-event", writeFile(t, "bad.json", `{"a":`)}, "is not valid JSON"},
		{"missing env file", []string{"-fn", "receiver", "-event", event, "-env", "testdata/nope.json"}, "invoke: read env file"},
		{"env value not a scalar", []string{"-fn", "hello", "-event", event, "-env", secretEnv}, `section "HelloFunction": variable TOKEN: want a string, number or boolean`},
		{"build failure", []string{"-fn", "nope", "-event", event, "-pkg", "./does-not-exist"}, "invoke: build ./does-not-exist: exit status 1"},
		{"missing bootstrap", []string{"-fn", "nope", "-event", event, "-bootstrap", "testdata/no-such-binary"}, "invoke: exec bootstrap testdata/no-such-binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tt.args...)
			if code != exitFailure {
				t.Errorf("exit %d, want %d", code, exitFailure)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, stderr)
			}
			if strings.Contains(stderr, "s3cr3t") {
				t.Errorf("stderr shows a value from the env file:\n%s", stderr)
			}
		})
	}
}

func TestParseEnv(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		section   string
		want      []string
		wantFound bool
		wantErr   string
	}{
		{
			name: "parameters then function, sorted", section: "ReceiverFunction",
			file: `{"Parameters":{"B":"p","A":"p"},"ReceiverFunction":{"B":"r","C":"r"},"DispatcherFunction":{"D":"d"}}`,
			want: []string{"A=p", "B=p", "B=r", "C=r"}, wantFound: true,
		},
		{
			name: "parameters only", section: "DispatcherFunction",
			file: `{"Parameters":{"A":"p"}}`,
			want: []string{"A=p"},
		},
		{
			name: "scalars", section: "F",
			file: `{"F":{"S":"x=y z","N":5,"F":-1.5e3,"T":true,"Z":false,"E":"","U":null}}`,
			want: []string{"E=", "F=-1.5e3", "N=5", "S=x=y z", "T=true", "Z=false"}, wantFound: true,
		},
		{name: "empty section", section: "F", file: `{"F":{}}`, want: nil, wantFound: true},
		{name: "empty file", section: "F", file: `{}`, want: nil},
		{name: "not JSON", section: "F", file: `{`, wantErr: "want a JSON object of sections"},
		{name: "array file", section: "F", file: `[]`, wantErr: "want a JSON object of sections"},
		{name: "section not object", section: "F", file: `{"F":["A=1"]}`, wantErr: `section "F": want an object`},
		{name: "null section", section: "F", file: `{"F":null}`, wantErr: `section "F": want an object`},
		{name: "bad parameters", section: "F", file: `{"Parameters":"x"}`, wantErr: `section "Parameters"`},
		{name: "array value", section: "F", file: `{"F":{"A":[1]}}`, wantErr: "variable A: want a string, number or boolean"},
		{name: "bad name", section: "F", file: `{"F":{"A=B":"1"}}`, wantErr: `variable name "A=B" is not valid`},
		{name: "NUL in value", section: "F", file: `{"F":{"A":"x\u0000y"}}`, wantErr: "variable A: value contains a NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := parseEnv([]byte(tt.file), tt.section)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) || found != tt.wantFound {
				t.Errorf("got %q found=%v, want %q found=%v", got, found, tt.want, tt.wantFound)
			}
		})
	}
}

func TestSectionKey(t *testing.T) {
	for fn, want := range map[string]string{"receiver": "ReceiverFunction", "dispatcher": "DispatcherFunction", "hello": "HelloFunction"} {
		if got := sectionKey(fn); got != want {
			t.Errorf("sectionKey(%q) = %q, want %q", fn, got, want)
		}
	}
}
