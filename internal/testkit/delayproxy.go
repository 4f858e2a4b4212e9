package testkit

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// DelayProxy is a TCP proxy in front of upstream (host:port) that holds
// back each answer: the first bytes upstream sends after a request arrive
// at the client delay() after the request did. The request itself reaches
// upstream at once, so a client that gives up waiting has still been
// served, as with a slow but working service. It closes with the test.
func DelayProxy(t testing.TB, upstream string, delay func() time.Duration) (addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("delay proxy: %v", err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { proxyConn(c, upstream, delay) })
		}
	})
	return ln.Addr().String()
}

func proxyConn(client net.Conn, upstream string, delay func() time.Duration) {
	defer client.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	var mu sync.Mutex
	var due time.Time // when the answer to the last request may go; zero once it went
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				mu.Lock()
				if due.IsZero() {
					due = time.Now().Add(delay())
				}
				mu.Unlock()
				if _, werr := up.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				// Half-close: upstream still answers what it was sent.
				if tc, ok := up.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			mu.Lock()
			d := due
			due = time.Time{}
			mu.Unlock()
			time.Sleep(time.Until(d)) // zero or past: no wait
			if _, werr := client.Write(buf[:n]); werr != nil {
				_, _ = io.Copy(io.Discard, up) // the client left: let upstream finish
				return
			}
		}
		if err != nil {
			return
		}
	}
}
