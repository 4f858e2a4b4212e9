package buildkite

// Webhook authentication.
//
// Buildkite sends either X-Buildkite-Token (the token in clear) or
// X-Buildkite-Signature: "timestamp=<unix s>,signature=<hex>", where the
// signature is HMAC-SHA256 keyed with the webhook token over
// "<timestamp>.<raw request body>" (the docs' Ruby example signs
// "#{timestamp}.#{webhook_request_body}"), and advise verifying the signature
// first, then the timestamp against a short window. See
// https://buildkite.com/docs/apis/webhooks/pipelines#webhook-signature and
// #defending-against-replay-attacks.

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultMaxAge is the replay window used when Authenticator.MaxAge is not
// positive (SIGNATURE_MAX_AGE's default).
const DefaultMaxAge = 5 * time.Minute

// ErrUnauthorized is wrapped by every error Verify and ParseSignature return.
var ErrUnauthorized = errors.New("unauthorized")

// authError carries a fixed failure class (and, for ParseSignature, a fixed
// reason). Its text is built only from those constants, never from request
// data, so it is safe to log. Instances are package-level values built once:
// failing, and printing the error, cost no allocation.
type authError struct {
	class string
	msg   string
}

func newAuthError(class, detail string) *authError {
	msg := "unauthorized: " + class
	if detail != "" {
		msg += ": " + detail
	}
	return &authError{class: class, msg: msg}
}

func (e *authError) Error() string { return e.msg }
func (e *authError) Unwrap() error { return ErrUnauthorized }

const classMalformed = "malformed signature header"

var (
	errNoToken         = newAuthError("no token configured", "")
	errNoCredentials   = newAuthError("no credentials", "")
	errTokenNotAllowed = newAuthError("token header not allowed", "")
	errTokenMismatch   = newAuthError("token mismatch", "")
	errMalformed       = newAuthError(classMalformed, "")
	errStale           = newAuthError("stale timestamp", "")
	errFuture          = newAuthError("future timestamp", "")
	errSigMismatch     = newAuthError("signature mismatch", "")

	// ParseSignature reasons; Verify reports them all as errMalformed.
	errEmptyPart    = newAuthError(classMalformed, "empty part")
	errNoEquals     = newAuthError(classMalformed, "part without '='")
	errEmptyKey     = newAuthError(classMalformed, "empty key")
	errDupTimestamp = newAuthError(classMalformed, "duplicate timestamp")
	errDupSignature = newAuthError(classMalformed, "duplicate signature")
	errNoTimestamp  = newAuthError(classMalformed, "missing timestamp")
	errNoSignature  = newAuthError(classMalformed, "missing signature")
	errBadTimestamp = newAuthError(classMalformed, "timestamp not a non-negative integer")
	errBadSignature = newAuthError(classMalformed, "signature not 64 hex digits")
)

// Class returns the failure class of an error from Verify (for a log field),
// "" for nil and "unknown" for an error that did not come from this file.
func Class(err error) string {
	if err == nil {
		return ""
	}
	if ae, ok := err.(*authError); ok { // Verify's own errors: no allocation
		return ae.class
	}
	var ae *authError
	if errors.As(err, &ae) {
		return ae.class
	}
	return "unknown"
}

// Authenticator checks X-Buildkite-Token / X-Buildkite-Signature.
// The zero value accepts signatures only, with DefaultMaxAge.
type Authenticator struct {
	MaxAge     time.Duration    // replay window both directions (SIGNATURE_MAX_AGE); ≤ 0 means DefaultMaxAge
	AllowToken bool             // accept X-Buildkite-Token (ALLOW_TOKEN_HEADER)
	Now        func() time.Time // nil = time.Now
}

// Verify returns nil when the request carries a valid credential for one of
// tokens, else an error wrapping ErrUnauthorized whose text names only the
// failure class. A non-empty signature header is always the one checked: a
// bad signature is not rescued by a token header. Empty entries in tokens
// are ignored (an empty HMAC key would let anyone sign); with none left every
// request fails.
func (a Authenticator) Verify(tokens []string, tokenHeader, signatureHeader string, body []byte) error {
	if !anyToken(tokens) {
		return errNoToken
	}
	switch {
	case signatureHeader != "":
		return a.verifySignature(tokens, signatureHeader, body)
	case tokenHeader != "":
		if !a.AllowToken {
			return errTokenNotAllowed
		}
		return verifyToken(tokens, tokenHeader)
	default:
		return errNoCredentials
	}
}

func anyToken(tokens []string) bool {
	for _, t := range tokens {
		if t != "" {
			return true
		}
	}
	return false
}

func (a Authenticator) verifySignature(tokens []string, header string, body []byte) error {
	tsText, ts, sig, err := parseSignature(header)
	if err != nil {
		return errMalformed
	}

	// "<timestamp>." once, reused for every token; the body is written to
	// the MAC as is, never copied into a combined message.
	prefix := make([]byte, 0, len(tsText)+1)
	prefix = append(prefix, tsText...)
	prefix = append(prefix, '.')

	var sum [sha256.Size]byte
	matched := 0
	for _, t := range tokens {
		if t == "" {
			continue
		}
		pool := macPool(t)
		mac := pool.Get().(hash.Hash)
		mac.Reset()
		mac.Write(prefix)
		mac.Write(body)
		// Every token is checked, whatever an earlier one gave, so timing
		// does not tell which token (old or new) matched.
		if hmac.Equal(mac.Sum(sum[:0]), sig[:]) {
			matched = 1
		}
		pool.Put(mac)
	}
	if matched == 0 {
		return errSigMismatch
	}

	// Timestamp after signature, as Buildkite advises: a stale or future
	// class in the logs then means a genuine signature (replay or clock
	// skew), not a forgery.
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	maxAge := a.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	window := int64(maxAge / time.Second)
	// ts ≥ 0 and now is a sane Unix time, so the difference cannot overflow.
	switch d := ts - now().Unix(); {
	case d < -window:
		return errStale
	case d > window:
		return errFuture
	}
	return nil
}

// verifyToken compares SHA-256 digests so that the comparison runs over
// equal lengths and neither the token's length nor a common prefix leaks.
func verifyToken(tokens []string, header string) error {
	got := sha256.Sum256([]byte(header))
	matched := 0
	for _, t := range tokens {
		if t == "" {
			continue
		}
		want := sha256.Sum256([]byte(t))
		matched |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	if matched == 0 {
		return errTokenMismatch
	}
	return nil
}

// Sign is the X-Buildkite-Signature value Buildkite sends for body at ts,
// signed with token: the one signer for the tools (send-webhook, bench,
// the dev stack's load) and the tests, so they all sign as Verify checks.
func Sign(token string, ts time.Time, body []byte) string {
	tsText := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(tsText))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "timestamp=" + tsText + ",signature=" + hex.EncodeToString(mac.Sum(nil))
}

// ParseSignature parses an X-Buildkite-Signature value,
// "timestamp=<unix s>,signature=<hex>". Parts are split on ',' and then on
// the first '='; they may come in any order, with spaces around parts, keys
// and values; unknown keys are ignored. Empty parts, parts without '=',
// empty keys, duplicate timestamp or signature, a missing part, a timestamp
// that is not a non-negative decimal integer, and a signature that is not
// 64 hex digits (32 bytes) are errors. Errors never quote the input.
func ParseSignature(h string) (ts int64, sig []byte, err error) {
	_, ts, s, err := parseSignature(h)
	if err != nil {
		return 0, nil, err
	}
	return ts, s[:], nil
}

// parseSignature is ParseSignature without allocation; it also returns the
// timestamp as sent, which is what Buildkite signed.
func parseSignature(h string) (tsText string, ts int64, sig [sha256.Size]byte, err error) {
	var sigText string
	haveTS, haveSig := false, false
	rest := h
	for more := true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ",")
		part = strings.TrimSpace(part)
		if part == "" {
			return "", 0, sig, errEmptyPart
		}
		key, val, ok := strings.Cut(part, "=")
		if !ok {
			return "", 0, sig, errNoEquals
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "":
			return "", 0, sig, errEmptyKey
		case "timestamp":
			if haveTS {
				return "", 0, sig, errDupTimestamp
			}
			haveTS, tsText = true, val
		case "signature":
			if haveSig {
				return "", 0, sig, errDupSignature
			}
			haveSig, sigText = true, val
		}
	}
	if !haveTS {
		return "", 0, sig, errNoTimestamp
	}
	if !haveSig {
		return "", 0, sig, errNoSignature
	}
	if ts, err = parseUnix(tsText); err != nil {
		return "", 0, sig, err
	}
	if !decodeHex(sig[:], sigText) {
		return "", 0, sig, errBadSignature
	}
	return tsText, ts, sig, nil
}

// decodeHex fills dst from exactly 2*len(dst) hex digits (either case)
// without converting s to a []byte first, which would allocate.
func decodeHex(dst []byte, s string) bool {
	if len(s) != hex.EncodedLen(len(dst)) {
		return false
	}
	for i := range dst {
		hi, ok1 := fromHexChar(s[2*i])
		lo, ok2 := fromHexChar(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func fromHexChar(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUnix accepts ASCII digits only: strconv alone would also take a sign.
func parseUnix(s string) (int64, error) {
	if s == "" {
		return 0, errBadTimestamp
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errBadTimestamp
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil { // overflow
		return 0, errBadTimestamp
	}
	return n, nil
}

// SplitTokens splits a configured token value on newlines (rotation: old and
// new token side by side), trims spaces and '\r', drops empty lines and keeps
// at most the first two.
func SplitTokens(s string) []string {
	var out []string
	for rest, more := s, true; more && len(out) < 2; {
		var line string
		line, rest, more = strings.Cut(rest, "\n")
		if line = strings.TrimSpace(line); line != "" {
			if out == nil {
				out = make([]string, 0, 2)
			}
			out = append(out, line)
		}
	}
	return out
}

// macPools keeps keyed HMAC states per token: hmac.New costs several
// allocations, and Reset restores a keyed state for the next request. Only
// the few tokens in use (two during a rotation) are ever held.
var (
	macMu    sync.Mutex
	macPools = map[string]*sync.Pool{}
)

func macPool(token string) *sync.Pool {
	macMu.Lock()
	defer macMu.Unlock()
	if p, ok := macPools[token]; ok {
		return p
	}
	if len(macPools) >= 8 { // tokens were rotated away: drop the old states
		clear(macPools)
	}
	key := []byte(token)
	p := &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	macPools[token] = p
	return p
}
