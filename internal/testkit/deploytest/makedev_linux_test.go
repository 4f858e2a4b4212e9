package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// Ctrl-C on `make dev`, typed on a real terminal (a pseudo-terminal here):
// the dev server drains and exits 0, and so does make, with no "Error" or
// "Interrupt" line. The terminal's line discipline turns the ^C byte into
// SIGINT for the foreground process group, as it does for a person.
func TestMakeDevExitsZeroOnCtrlC(t *testing.T) {
	master, slave, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal here (%v): cannot type Ctrl-C", err)
	}
	defer master.Close()
	defer slave.Close()

	cmd := exec.Command("make", "-s", "-C", templateDir, "dev")
	cmd.Env = append(os.Environ(), "DEV_ADDR=127.0.0.1:0", "SQIBS_SIM_ADDR=127.0.0.1:0", "BUILDKITE_SIM_ADDR=127.0.0.1:0")
	out := &testkit.Buffer{} // written by exec's copying goroutines while read here
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, out, out
	// A session of its own whose controlling terminal is the pty: make is
	// then the terminal's foreground job, as when typed at a shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }()
	deadline := time.After(3 * time.Minute) // the first run builds the dev server
	for !strings.Contains(out.String(), "receiver listening on") {
		select {
		case err := <-done:
			t.Fatalf("make dev ended before it was ready: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("make dev not ready:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := master.Write([]byte{0x03}); err != nil { // ^C
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || strings.Contains(out.String(), "Error") || strings.Contains(out.String(), "Interrupt") {
			t.Errorf("make dev after Ctrl-C: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), `"stopped"`) {
			t.Errorf("the dev server did not drain and stop:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("make dev did not stop after Ctrl-C:\n%s", out.String())
	}
}

// openPTY opens a pseudo-terminal pair through /dev/ptmx (Linux).
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var unlock int32
	if err := ioctl(master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlockpt: %w", err)
	}
	var n uint32
	if err := ioctl(master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("ptsname: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

func ioctl(fd, req, arg uintptr) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, arg); e != 0 {
		return e
	}
	return nil
}
