//go:build !(linux || darwin)

package main

// takeTerminal is a no-op where the terminal's foreground group is not
// managed this way.
func takeTerminal() (restore func()) { return func() {} }
