package moto

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Launch without a moto_server on PATH says so, for the callers' skip or note.
func TestLaunchAbsent(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if p, err := Launch(context.Background(), nil); !errors.Is(err, ErrAbsent) {
		if p != nil {
			p.Stop()
		}
		t.Fatalf("Launch with no moto_server on PATH: %v, want ErrAbsent", err)
	}
}

// A moto_server that dies at start is reported with its last words at
// once, not after the 30 s wait for an answer.
func TestLaunchExitAtStart(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'ImportError: no module named werkzeug' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "moto_server"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	p, err := Launch(t.Context(), nil)
	if p != nil {
		p.Stop()
	}
	if err == nil || !strings.Contains(err.Error(), "exited at start") || !strings.Contains(err.Error(), "no module named werkzeug") {
		t.Fatalf("Launch of a moto_server that exits: %v, want an error with its output", err)
	}
}
