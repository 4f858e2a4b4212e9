package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/callgoose/buildkite-sqibs/internal/local/buildtags"
)

// buildFlags are `make build`'s: the deployed bootstrap's flags.
var buildFlags = []string{"-tags", buildtags.Lambda, "-trimpath", "-ldflags=-s -w"}

// Packages built, relative to the module root.
const (
	pkgReceiver   = "./functions/receiver"
	pkgDispatcher = "./functions/dispatcher"
	pkgHello      = "./internal/local/runtimeapi/testdata/hello"
	pkgHelloSDK   = "./scripts/bench/testdata/hellosdk"
)

// moduleRoot is the directory of the main module's go.mod, so the command
// works from any directory inside the repository.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module (go env GOMOD is %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}

// goBuild builds pkg for goos/goarch with buildFlags into out.
func goBuild(ctx context.Context, root, pkg, goos, goarch, out string) error {
	args := append([]string{"build"}, buildFlags...)
	args = append(args, "-o", out, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s/%s: %v\n%s", pkg, goos, goarch, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// hostBinaries are the bootstraps built for this machine, to run.
type hostBinaries struct{ receiver, dispatcher, hello, helloSDK string }

// buildHost builds the four bootstraps for this machine into dir.
func buildHost(ctx context.Context, root, dir string) (hostBinaries, error) {
	b := hostBinaries{
		receiver:   filepath.Join(dir, "host", "receiver", "bootstrap"),
		dispatcher: filepath.Join(dir, "host", "dispatcher", "bootstrap"),
		hello:      filepath.Join(dir, "host", "hello", "bootstrap"),
		helloSDK:   filepath.Join(dir, "host", "hellosdk", "bootstrap"),
	}
	for pkg, out := range map[string]string{pkgReceiver: b.receiver, pkgDispatcher: b.dispatcher, pkgHello: b.hello, pkgHelloSDK: b.helloSDK} {
		if err := goBuild(ctx, root, pkg, runtime.GOOS, runtime.GOARCH, out); err != nil {
			return b, err
		}
	}
	return b, nil
}

// bootstrapSizes builds both functions for linux/arm64 exactly as
// `make build` does and records their sizes.
func bootstrapSizes(ctx context.Context, root, dir string, res *Results) error {
	for _, fn := range []struct{ figure, pkg string }{
		{"receiver_bootstrap_bytes", pkgReceiver},
		{"dispatcher_bootstrap_bytes", pkgDispatcher},
	} {
		out := filepath.Join(dir, "linux-arm64", filepath.Base(fn.pkg), "bootstrap")
		if err := goBuild(ctx, root, fn.pkg, "linux", "arm64", out); err != nil {
			return fmt.Errorf("%s: %w", fn.figure, err)
		}
		st, err := os.Stat(out)
		if err != nil {
			return fmt.Errorf("%s: %w", fn.figure, err)
		}
		res.set(fn.figure, float64(st.Size()))
	}
	res.note("bootstrap sizes: CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -tags %s -trimpath -ldflags='-s -w' (as make build)", buildtags.Lambda)
	return nil
}

func hostPlatform() string { return runtime.GOOS + "/" + runtime.GOARCH }
