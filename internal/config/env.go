// Package config reads the environment once at start. Every accessor names
// the variable in its error, so a bad value stops a function with one line
// that says what to fix.
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Env looks variables up; os.LookupEnv in production, a map in tests.
type Env func(name string) (string, bool)

// Map turns a map into an Env.
func Map(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Reader collects the first error so callers can read many variables and
// check once.
type Reader struct {
	env Env
	err error
}

// NewReader reads from env.
func NewReader(env Env) *Reader { return &Reader{env: env} }

// Err is the first bad value met, naming its variable.
func (r *Reader) Err() error { return r.err }

func (r *Reader) fail(name, val, want string) {
	if r.err == nil {
		r.err = fmt.Errorf("config: %s=%q is not valid: want %s", name, val, want)
	}
}

// Invalid records that name's value breaks a rule its reader checks beyond
// the accessor's (a bound, or how it goes with another variable), in the
// same one line naming the variable.
func (r *Reader) Invalid(name, want string) {
	v, _ := r.raw(name)
	r.fail(name, v, want)
}

func (r *Reader) raw(name string) (string, bool) {
	v, ok := r.env(name)
	if !ok {
		return "", false
	}
	v = strings.TrimSpace(v)
	return v, v != ""
}

// Has reports whether name is set to something other than blanks.
func (r *Reader) Has(name string) bool { _, ok := r.raw(name); return ok }

// String returns the trimmed value or def when unset or blank.
func (r *Reader) String(name, def string) string {
	if v, ok := r.raw(name); ok {
		return v
	}
	return def
}

// Optional returns the trimmed value when the variable is set, even to
// blanks (then ""), and def only when it is unset: for settings where an
// explicit empty value means "off".
func (r *Reader) Optional(name, def string) string {
	v, ok := r.env(name)
	if !ok {
		return def
	}
	return strings.TrimSpace(v)
}

// Secret returns the value untrimmed of inner content but with surrounding
// blanks removed; "" when unset. Kept apart from String so no caller is
// tempted to put a default on a secret.
func (r *Reader) Secret(name string) string {
	v, _ := r.raw(name)
	return v
}

// Required returns the value or records an error when it is missing.
func (r *Reader) Required(name string) string {
	v, ok := r.raw(name)
	if !ok && r.err == nil {
		r.err = fmt.Errorf("config: %s is required", name)
	}
	return v
}

// Bool accepts true/false/1/0/yes/no/on/off.
func (r *Reader) Bool(name string, def bool) bool {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	case "false", "0", "no", "off":
		return false
	}
	r.fail(name, v, "true or false")
	return def
}

// Duration is a Go duration greater than zero.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.fail(name, v, "a positive Go duration such as 5s or 5m")
		return def
	}
	return d
}

// Int is a whole number in [min, max].
func (r *Reader) Int(name string, def, min, max int64) int64 {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		r.fail(name, v, fmt.Sprintf("a whole number from %d to %d", min, max))
		return def
	}
	return n
}

// List splits a comma list, trimming blanks and dropping empty items.
func (r *Reader) List(name string, def []string) []string {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		r.fail(name, v, "a comma-separated list")
		return def
	}
	return out
}

// OneOf accepts one of the listed words (case-insensitive), returned lower-case.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v, ok := r.raw(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	r.fail(name, v, "one of "+strings.Join(allowed, ", "))
	return def
}
