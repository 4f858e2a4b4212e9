package sqibs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Class says what the caller should do with an outcome.
type Class int

const (
	Success   Class = iota // delivered
	Transient              // retry later
	Permanent              // will never succeed as sent: dead-letter it
)

func (c Class) String() string {
	switch c {
	case Success:
		return "success"
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Error is a failed Send. Its message never holds the token or a URL query.
type Error struct {
	Class  Class
	Status int    // HTTP status; 0 when SQIBS never answered
	Body   string // SQIBS's body, clipped to ~1 KB, for the log
	Err    error  // the cause, if any beyond the status
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sqibs: ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "HTTP %d %s", e.Status, http.StatusText(e.Status))
		if e.Err != nil {
			b.WriteString(": ")
		}
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	if e.Status == 0 && e.Err == nil {
		b.WriteString("failed")
	}
	fmt.Fprintf(&b, " (%s)", e.Class)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err will fail again however often it is retried.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Class == Permanent
}

// IsTransient reports whether err is worth retrying: any non-nil error that
// is not known to be permanent, since retrying is the safe default.
func IsTransient(err error) bool {
	return err != nil && !IsPermanent(err)
}
