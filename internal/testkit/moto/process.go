package moto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/local/tailbuf"
)

// ErrAbsent is Launch's error when moto_server is not on PATH.
var ErrAbsent = errors.New("moto_server is not on PATH (pip install 'moto[server]')")

// startTimeout is how long Launch waits for moto to answer: a cold Python
// start with every service's models takes seconds on a busy machine.
const startTimeout = 30 * time.Second

// Process is a moto_server this program started. Launch and Stop need no
// *testing.T: make bench (scripts/bench) starts moto with them outside
// tests, and Start builds the tests' shared server on them.
type Process struct {
	URL    string // http://127.0.0.1:<port>
	cmd    *exec.Cmd
	logs   *tailbuf.Buffer // the end of moto's output, for start errors
	exited chan struct{}   // closed once moto has exited and been reaped
}

// Launch starts moto_server on a free loopback port and waits for it to
// answer. It runs in its own process group, so Stop reaches the Python
// process behind any shim (pyenv's is a shell script), and on Linux it is
// killed if this process dies without stopping it. Its output is copied to
// out when out is not nil.
func Launch(ctx context.Context, out io.Writer) (*Process, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, ErrAbsent
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("moto: free port: %w", err)
	}
	p := &Process{URL: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &tailbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	var w io.Writer = p.logs
	if out != nil {
		w = io.MultiWriter(p.logs, out)
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(p.cmd.SysProcAttr)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("moto: start %s: %w", bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := http.Get(p.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("moto: %s exited at start: %s", bin, p.logs.String())
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("moto: %s did not answer within %v: %w", p.URL, startTimeout, err)
		}
	}
}

// Stop kills moto's process group (Launch made it) and waits, briefly, for
// moto to be reaped.
func (p *Process) Stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
