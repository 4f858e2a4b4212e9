package runtimeapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/tailbuf"
)

// ErrExited is returned by Process.Invoke when the bootstrap exits before
// answering.
var ErrExited = errors.New("bootstrap exited before answering")

// Process is a bootstrap binary running against a Server.
type Process struct {
	cmd     *exec.Cmd
	srv     *Server
	started time.Time
	tail    *tailbuf.Buffer

	done    chan struct{} // closed once the process has been waited for
	waitErr error
}

// Exec starts binary as a Lambda custom runtime talking to s. The
// environment is env (later entries win) on top of the variables Lambda
// sets, whose defaults apply only where env does not set them:
// AWS_LAMBDA_FUNCTION_NAME=local, AWS_LAMBDA_FUNCTION_VERSION=$LATEST,
// AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128, AWS_REGION=us-east-1,
// AWS_DEFAULT_REGION=$AWS_REGION, _HANDLER=bootstrap and LAMBDA_TASK_ROOT
// (the binary's directory). Lambda always gives a function its role's
// credentials; when env has none, AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY are set to "local-emulator" placeholders, which
// moto and LocalStack accept (pass real ones to reach AWS).
// AWS_LAMBDA_RUNTIME_API always points at s.
// The process's stdout and stderr are copied to the given writers (nil
// discards) from two goroutines: writers shared with other code must be
// safe for concurrent use (os.Stderr is). Cancelling ctx kills the process.
func Exec(ctx context.Context, binary string, env []string, s *Server, stdout, stderr io.Writer) (*Process, error) {
	abs, err := filepath.Abs(binary)
	if err != nil {
		return nil, fmt.Errorf("exec bootstrap: %w", err)
	}
	name := lookup(env, "AWS_LAMBDA_FUNCTION_NAME", "local")
	region := lookup(env, "AWS_REGION", "us-east-1")
	defaults := []string{
		"AWS_LAMBDA_FUNCTION_NAME=" + name,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_REGION=" + region,
		"AWS_DEFAULT_REGION=" + region,
		"_HANDLER=bootstrap",
		"LAMBDA_TASK_ROOT=" + filepath.Dir(abs),
	}
	full := make([]string, 0, len(defaults)+len(env)+1)
	full = append(full, defaults...)
	full = append(full, env...) // os/exec keeps the last value of a repeated key
	// An empty name or region in env counts as unset; the runtime API
	// address is never the caller's.
	full = append(full, "AWS_LAMBDA_FUNCTION_NAME="+name, "AWS_REGION="+region, "AWS_LAMBDA_RUNTIME_API="+s.Addr())
	if lookup(env, "AWS_ACCESS_KEY_ID", "") == "" || lookup(env, "AWS_SECRET_ACCESS_KEY", "") == "" {
		full = append(full, "AWS_ACCESS_KEY_ID=local-emulator", "AWS_SECRET_ACCESS_KEY=local-emulator")
	}
	s.SetFunctionARN(FunctionARN(region, name))

	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	p := &Process{srv: s, tail: &tailbuf.Buffer{}, done: make(chan struct{})}
	cmd := exec.CommandContext(ctx, abs)
	cmd.Env = full
	cmd.Dir = filepath.Dir(abs)
	cmd.Stdout = stdout
	cmd.Stderr = io.MultiWriter(stderr, p.tail)
	cmd.WaitDelay = time.Second // don't hang on pipes a stray child keeps open
	p.cmd = cmd
	// Taken before Start: a fast child can reach its first /next before
	// Start returns, and a start → /next time must never be negative.
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec bootstrap %s: %w", binary, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// lookup is the last value of key in env, or def.
func lookup(env []string, key, def string) string {
	v := def
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key && val != "" {
			v = val
		}
	}
	return v
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Started is when the process was started; with Server.FirstNext it gives
// the bootstrap's init time.
func (p *Process) Started() time.Time { return p.started }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err, once Done is closed, says why the process exited ("exit status 1"
// plus its last line on stderr); nil for a clean exit.
func (p *Process) Err() error {
	select {
	case <-p.done:
	default:
		return nil
	}
	if p.waitErr == nil {
		return nil
	}
	if line := p.tail.LastLine(300); line != "" {
		return fmt.Errorf("%v: %s", p.waitErr, line)
	}
	return p.waitErr
}

// Invoke is Server.Invoke that also fails, with ErrExited, as soon as the
// process exits without answering (a crash at init, a panic, a bad
// configuration).
func (p *Process) Invoke(ctx context.Context, event []byte, timeout time.Duration) (Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-p.done:
			reason := "exited"
			if err := p.Err(); err != nil {
				reason = err.Error()
			}
			cancel(fmt.Errorf("%w (%s)", ErrExited, reason))
		case <-ctx.Done():
		}
	}()
	return p.srv.Invoke(ctx, event, timeout)
}

// Stop kills the process, as Lambda does when it retires an execution
// environment, and waits for it to exit.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop bootstrap: %w", err)
	}
	<-p.done
	return nil
}

// PeakRSS is the process's peak resident set size in bytes: VmHWM while it
// runs, the kernel's max RSS once it has exited. 0 where unknown (non-Linux).
func (p *Process) PeakRSS() int64 {
	select {
	case <-p.done:
		return exitedPeakRSS(p.cmd.ProcessState)
	default:
		return livePeakRSS(p.cmd.Process.Pid)
	}
}
