package moto

import "syscall"

// setDeathSignal kills moto if the program that launched it (a test binary,
// make bench) dies without stopping it.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
