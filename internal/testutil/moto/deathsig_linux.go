package moto

import "syscall"

// setDeathSignal kills moto if the test binary dies without running cleanup.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
