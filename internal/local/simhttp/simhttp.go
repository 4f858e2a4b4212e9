// Package simhttp holds the HTTP plumbing the local API simulators
// (sqibssim, buildkitesim) share.
package simhttp

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// Bearer returns the token of an "Authorization: Bearer <token>" value, ""
// for any other.
func Bearer(h string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// WriteJSON answers code with v as JSON; fallback is the body sent (as a
// 500) should v not encode.
func WriteJSON(w http.ResponseWriter, code int, v any, fallback string) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		http.Error(w, fallback, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// Token is a simulator's configured token, kept as its hash.
type Token struct {
	sum [sha256.Size]byte
	set bool
}

// NewToken keeps t; an empty t matches nothing.
func NewToken(t string) Token { return Token{sum: sha256.Sum256([]byte(t)), set: t != ""} }

// Matches reports whether any non-empty offered token is t, in constant
// time (hashing first hides the length too).
func (t Token) Matches(offered ...string) bool {
	if !t.set {
		return false
	}
	ok := 0
	for _, o := range offered {
		if o == "" {
			continue
		}
		h := sha256.Sum256([]byte(o))
		ok |= subtle.ConstantTimeCompare(h[:], t.sum[:])
	}
	return ok == 1
}
