//go:build !linux

package moto

import "syscall"

func setDeathSignal(*syscall.SysProcAttr) {}
