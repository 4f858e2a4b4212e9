package testkit

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

// Token is a fixed token source for the API clients (Get never fails).
type Token string

// Get returns the token.
func (t Token) Get(context.Context) (string, error) { return string(t), nil }

// TokenError is a token source that cannot be read (Secrets Manager down):
// Get always fails with Err.
type TokenError struct{ Err error }

// Get returns e.Err.
func (e TokenError) Get(context.Context) (string, error) { return "", e.Err }

// Fixture is the body of a webhook fixture of internal/buildkite/testdata
// (real Buildkite payloads, kept with the parser), from any package's tests.
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	body, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "buildkite", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// Webhook parses a webhook fixture of internal/buildkite/testdata.
func Webhook(t testing.TB, name string) *buildkite.Payload {
	t.Helper()
	p, err := buildkite.Parse(Fixture(t, name), "")
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}
