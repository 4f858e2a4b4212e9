// Package tailbuf keeps the end of a process's output, so a failure can be
// explained by the process's own last words without holding all it wrote.
package tailbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Size is how much of the stream a Buffer keeps.
const Size = 4 << 10

// Buffer is an io.Writer that keeps the last Size bytes written to it. The
// zero value is ready; it is safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *Buffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > Size {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-Size:]...)
	}
	return len(b), nil
}

// String is what is kept, trimmed.
func (t *Buffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// LastLine is the last line kept, cut to max bytes.
func (t *Buffer) LastLine(max int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := bytes.Split(bytes.TrimSpace(t.buf), []byte("\n"))
	line := strings.TrimSpace(string(lines[len(lines)-1]))
	if len(line) > max {
		line = line[:max] + "…"
	}
	return line
}
