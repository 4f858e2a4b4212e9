//go:build linux || darwin

package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// takeTerminal makes the dev server the terminal's foreground process
// group, as a job-control shell does for a job, and returns what gives the
// terminal back. Why: Ctrl-C signals the whole foreground group, so under
// `make dev` make would get SIGINT too, and GNU make then ends by its own
// signal (exit 130, or "Error 1" under `go run`) even though the server
// drained and exited 0. With the server alone in the foreground, the
// keypress reaches only it, and make sees a child that exited 0. Nothing
// changes when stdin is not a terminal or the server is not in the
// foreground (tests, pipes, CI); the shell takes the terminal back after
// make ends in any case, even if the server crashed.
func takeTerminal() (restore func()) {
	noop := func() {}
	fd := os.Stdin.Fd()
	orig, err := tcgetpgrp(fd)
	if err != nil || orig != syscall.Getpgrp() {
		return noop
	}
	if err := syscall.Setpgid(0, 0); err != nil {
		return noop
	}
	// A background group that sets the terminal's group gets SIGTTOU,
	// which would stop the process; between Setpgid and tcsetpgrp, and
	// while giving the terminal back, this process is such a group.
	signal.Ignore(syscall.SIGTTOU)
	if err := tcsetpgrp(fd, syscall.Getpgrp()); err != nil {
		return noop
	}
	return func() { _ = tcsetpgrp(fd, orig) }
}

func tcgetpgrp(fd uintptr) (int, error) {
	var pgrp int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); e != 0 {
		return 0, e
	}
	return int(pgrp), nil
}

func tcsetpgrp(fd uintptr, pgrp int) error {
	p := int32(pgrp)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p))); e != 0 {
		return e
	}
	return nil
}
