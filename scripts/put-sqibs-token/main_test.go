package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

const token = "sqibs-Tok3n-9f8e7d"

// TestPutSecret runs the command against moto: the secret starts with the
// template's placeholder; only a good token replaces it, and the token is
// never printed.
func TestPutSecret(t *testing.T) {
	tests := []struct {
		name     string
		args     func(arn string) []string
		stdin    string
		code     int
		stored   string // the secret's value afterwards
		stderrHs string // substring of stderr
	}{
		{"piped with newline", idArgs, token + "\n", 0, token, ""},
		{"CRLF and blanks trimmed", idArgs, "  " + token + "\r\n", 0, token, ""},
		{"by name", func(string) []string { return []string{"-secret-id", "buildkite-sqibs/sqibs-token"} }, token, 0, token, ""},
		{"empty", idArgs, "", 2, placeholder, "refusing to store an empty secret"},
		{"blank line", idArgs, " \n", 2, placeholder, "refusing to store an empty secret"},
		{"two lines", idArgs, token + "\nsecond\n", 2, placeholder, "more than one line"},
		{"placeholder", idArgs, placeholder + "\n", 2, placeholder, "placeholder"},
		{"no secret id", func(string) []string { return nil }, token, 2, placeholder, "usage: put-sqibs-token"},
		{"extra argument", func(arn string) []string { return []string{"-secret-id", arn, token} }, "", 2, placeholder, "usage: put-sqibs-token"},
		{"unknown secret", func(string) []string { return []string{"-secret-id", "no-such-secret"} }, token, 1, placeholder, "store the token in no-such-secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := moto.Start(t)
			sm := secretsmanager.NewFromConfig(srv.AWSConfig(t))
			created, err := sm.CreateSecret(t.Context(), &secretsmanager.CreateSecretInput{
				Name: aws.String("buildkite-sqibs/sqibs-token"), SecretString: aws.String(placeholder),
			})
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args(aws.ToString(created.ARN)), strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderrHs) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderrHs)
			}
			if strings.Contains(stdout.String()+stderr.String(), token) {
				t.Errorf("the token was printed: stdout %q stderr %q", stdout.String(), stderr.String())
			}
			if code == 0 && !strings.Contains(stdout.String(), "stored a new version of "+aws.ToString(created.ARN)) {
				t.Errorf("stdout %q does not confirm the secret", stdout.String())
			}
			got, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: created.ARN})
			if err != nil {
				t.Fatal(err)
			}
			if v := aws.ToString(got.SecretString); v != tc.stored {
				t.Errorf("secret holds %q, want %q", v, tc.stored)
			}
		})
	}
}

func idArgs(arn string) []string { return []string{"-secret-id", arn} }

func TestReadTokenTooLong(t *testing.T) {
	var stderr bytes.Buffer
	_, err := readToken(strings.NewReader(strings.Repeat("x", maxToken+1)), &stderr)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err = %v, want a length error", err)
	}
	if got, err := readToken(strings.NewReader(strings.Repeat("x", maxToken)+"\n"), &stderr); err != nil || len(got) != maxToken {
		t.Fatalf("a token of exactly %d bytes: len %d, %v", maxToken, len(got), err)
	}
}
