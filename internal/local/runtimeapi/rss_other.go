//go:build !linux

package runtimeapi

import "os"

// Peak RSS is only measured on Linux; elsewhere the units and sources vary.
func livePeakRSS(int) int64 { return 0 }

func exitedPeakRSS(*os.ProcessState) int64 { return 0 }
