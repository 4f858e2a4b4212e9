package main

import "syscall"

// childProcAttr puts a helper server in its own process group and kills it
// if this command dies without stopping it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
