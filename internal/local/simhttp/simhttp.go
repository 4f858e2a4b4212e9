// Package simhttp holds the HTTP plumbing the local API simulators
// (sqibssim, buildkitesim) share.
package simhttp

import (
	"bytes"
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
