package buildkite

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	authToken    = "bk-webhook-token-1"
	authToken2   = "bk-webhook-token-2-rotated"
	authOther    = "some-other-secret"
	authNowUnix  = 1722859200 // 2024-08-05T12:00:00Z
	authBodyText = `{"event":"ping","service":{"id":"x"}}`
)

var authNow = time.Unix(authNowUnix, 0)

// authMAC is written independently of auth.go: it builds the whole message
// as one string, the way Buildkite's documented Ruby example does.
func authMAC(token string, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(ts + "." + string(body)))
	return hex.EncodeToString(m.Sum(nil))
}

func authSign(token string, ts int64, body []byte) string {
	return "timestamp=" + strconv.FormatInt(ts, 10) + ",signature=" + authMAC(token, strconv.FormatInt(ts, 10), body)
}

func authAt(now time.Time, allowToken bool) Authenticator {
	return Authenticator{MaxAge: 5 * time.Minute, AllowToken: allowToken, Now: func() time.Time { return now }}
}

// TestVerifyKnownAnswer pins the construction against a value computed
// outside Go (openssl dgst -sha256 -hmac, and Python's hmac).
func TestVerifyKnownAnswer(t *testing.T) {
	const h = "timestamp=1722859200,signature=4a36b653af9053a5f50b873e411bf3cb0e4dfa07784237817662925ebee5f2cb"
	if err := authAt(authNow, false).Verify([]string{authToken}, "", h, []byte(authBodyText)); err != nil {
		t.Fatalf("known-answer signature rejected: %v", err)
	}
	if got := authSign(authToken, authNowUnix, []byte(authBodyText)); got != h {
		t.Fatalf("test signer disagrees with the known answer: %s", got)
	}
}

// TestSign checks the shared signer against the known answer and against
// authMAC, which is written apart from it, and that Verify takes what it
// signs (the tools and other packages' tests rely on that).
func TestSign(t *testing.T) {
	const h = "timestamp=1722859200,signature=4a36b653af9053a5f50b873e411bf3cb0e4dfa07784237817662925ebee5f2cb"
	if got := Sign(authToken, authNow, []byte(authBodyText)); got != h {
		t.Fatalf("Sign disagrees with the known answer: %s", got)
	}
	for _, tc := range []struct {
		token string
		at    time.Time
		body  []byte
	}{
		{authToken2, authNow, []byte(authBodyText)},
		{authToken, authNow.Add(1500 * time.Millisecond), []byte(authBodyText)}, // whole seconds, as Buildkite sends
		{authToken, time.Unix(0, 0), []byte{}},
		{authOther, authNow, []byte("\x00\xff not JSON, signed as is\n")},
	} {
		ts := strconv.FormatInt(tc.at.Unix(), 10)
		want := "timestamp=" + ts + ",signature=" + authMAC(tc.token, ts, tc.body)
		if got := Sign(tc.token, tc.at, tc.body); got != want {
			t.Errorf("Sign(%q, %v, %q) = %s, want %s", tc.token, tc.at, tc.body, got, want)
		}
		if err := authAt(tc.at, false).Verify([]string{tc.token}, "", Sign(tc.token, tc.at, tc.body), tc.body); err != nil {
			t.Errorf("Verify rejects Sign(%q, %v, %q): %v", tc.token, tc.at, tc.body, err)
		}
	}
}

func TestVerify(t *testing.T) {
	body := []byte(authBodyText)
	good := authMAC(authToken, "1722859200", body)
	sigAt := func(ts int64) string { return authSign(authToken, ts, body) }
	one := []string{authToken}
	both := []string{authToken, authToken2}

	tests := []struct {
		name       string
		tokens     []string
		allowToken bool
		tokenHdr   string
		sigHdr     string
		body       []byte // nil = body
		want       string // failure class; "" = accepted
	}{
		// accepted
		{name: "signature", tokens: one, sigHdr: sigAt(authNowUnix)},
		{name: "signature parts reversed", tokens: one, sigHdr: "signature=" + good + ",timestamp=1722859200"},
		{name: "signature with spaces", tokens: one, sigHdr: " timestamp = 1722859200 , signature = " + good + " "},
		{name: "signature tabs", tokens: one, sigHdr: "timestamp=1722859200,\tsignature=" + good},
		{name: "signature unknown key ignored", tokens: one, sigHdr: "v=1,timestamp=1722859200,signature=" + good + ",x=y"},
		{name: "signature upper-case hex", tokens: one, sigHdr: "timestamp=1722859200,signature=" + strings.ToUpper(good)},
		{name: "signature leading zero timestamp as signed", tokens: one, sigHdr: "timestamp=01722859200,signature=" + authMAC(authToken, "01722859200", body)},
		{name: "signature first rotation token", tokens: both, sigHdr: sigAt(authNowUnix)},
		{name: "signature second rotation token", tokens: both, sigHdr: authSign(authToken2, authNowUnix, body)},
		{name: "signature empty body", tokens: one, sigHdr: authSign(authToken, authNowUnix, []byte{}), body: []byte{}},
		{name: "signature at oldest edge", tokens: one, sigHdr: sigAt(authNowUnix - 300)},
		{name: "signature at newest edge", tokens: one, sigHdr: sigAt(authNowUnix + 300)},
		{name: "signature wins over bad token header", tokens: one, allowToken: true, tokenHdr: "wrong", sigHdr: sigAt(authNowUnix)},
		{name: "signature ignores empty token entry", tokens: []string{"", authToken}, sigHdr: sigAt(authNowUnix)},
		{name: "token header allowed", tokens: one, allowToken: true, tokenHdr: authToken},
		{name: "token header second rotation token", tokens: both, allowToken: true, tokenHdr: authToken2},

		// no token configured: fail closed whatever is sent
		{name: "no tokens", tokens: nil, allowToken: true, tokenHdr: authToken, sigHdr: sigAt(authNowUnix), want: "no token configured"},
		{name: "only empty tokens, signed with empty key", tokens: []string{"", ""}, sigHdr: authSign("", authNowUnix, body), want: "no token configured"},
		{name: "only empty tokens, empty token header", tokens: []string{""}, allowToken: true, tokenHdr: "x", want: "no token configured"},

		// credentials missing or not allowed
		{name: "neither header", tokens: one, allowToken: true, want: "no credentials"},
		{name: "token header not allowed", tokens: one, allowToken: false, tokenHdr: authToken, want: "token header not allowed"},

		// token mismatch
		{name: "wrong token", tokens: one, allowToken: true, tokenHdr: "wrong", want: "token mismatch"},
		{name: "token prefix", tokens: one, allowToken: true, tokenHdr: authToken[:len(authToken)-1], want: "token mismatch"},
		{name: "token longer", tokens: one, allowToken: true, tokenHdr: authToken + "x", want: "token mismatch"},
		{name: "token with space", tokens: one, allowToken: true, tokenHdr: " " + authToken, want: "token mismatch"},
		{name: "token of other config", tokens: both, allowToken: true, tokenHdr: authOther, want: "token mismatch"},

		// signature mismatch
		{name: "signed with other secret", tokens: both, sigHdr: authSign(authOther, authNowUnix, body), want: "signature mismatch"},
		{name: "signed with empty key next to real token", tokens: []string{"", authToken}, sigHdr: authSign("", authNowUnix, body), want: "signature mismatch"},
		{name: "timestamp altered", tokens: one, sigHdr: "timestamp=1722859201,signature=" + good, want: "signature mismatch"},
		{name: "body altered", tokens: one, sigHdr: sigAt(authNowUnix), body: []byte(`{"event":"pong","service":{"id":"x"}}`), want: "signature mismatch"},
		{name: "zero signature", tokens: one, sigHdr: "timestamp=1722859200,signature=" + strings.Repeat("0", 64), want: "signature mismatch"},
		{name: "bad signature not rescued by good token", tokens: one, allowToken: true, tokenHdr: authToken, sigHdr: authSign(authOther, authNowUnix, body), want: "signature mismatch"},
		{name: "stale and forged is a mismatch", tokens: one, sigHdr: authSign(authOther, authNowUnix-3600, body), want: "signature mismatch"},

		// replay window
		{name: "stale", tokens: one, sigHdr: sigAt(authNowUnix - 301), want: "stale timestamp"},
		{name: "very stale", tokens: one, sigHdr: sigAt(0), want: "stale timestamp"},
		{name: "future", tokens: one, sigHdr: sigAt(authNowUnix + 301), want: "future timestamp"},
		{name: "far future", tokens: one, sigHdr: "timestamp=9223372036854775807,signature=" + authMAC(authToken, "9223372036854775807", body), want: "future timestamp"},

		// malformed headers
		{name: "a,b", tokens: one, sigHdr: "a,b", want: classMalformed},
		{name: "invalid", tokens: one, sigHdr: "invalid", want: classMalformed},
		{name: "non-numeric timestamp", tokens: one, sigHdr: "timestamp=abc,signature=" + good, want: classMalformed},
		{name: "empty values", tokens: one, sigHdr: "timestamp=,signature=", want: classMalformed},
		{name: "=,=", tokens: one, sigHdr: "=,=", want: classMalformed},
		{name: "timestamp only", tokens: one, sigHdr: "timestamp=1", want: classMalformed},
		{name: "signature only", tokens: one, sigHdr: "signature=" + good, want: classMalformed},
		{name: "non-hex signature", tokens: one, sigHdr: "timestamp=1722859200,signature=" + strings.Repeat("zz", 32), want: classMalformed},
		{name: "short signature", tokens: one, sigHdr: "timestamp=1722859200,signature=" + good[:62], want: classMalformed},
		{name: "long signature", tokens: one, sigHdr: "timestamp=1722859200,signature=" + good + "00", want: classMalformed},
		{name: "only spaces", tokens: one, sigHdr: "   ", want: classMalformed},
		{name: "duplicate timestamp", tokens: one, sigHdr: "timestamp=1722859200,timestamp=1722859200,signature=" + good, want: classMalformed},
		{name: "duplicate signature", tokens: one, sigHdr: "timestamp=1722859200,signature=" + good + ",signature=" + good, want: classMalformed},
		{name: "trailing comma", tokens: one, sigHdr: sigAt(authNowUnix) + ",", want: classMalformed},
		{name: "negative timestamp", tokens: one, sigHdr: "timestamp=-1,signature=" + good, want: classMalformed},
		{name: "plus-signed timestamp", tokens: one, sigHdr: "timestamp=+1722859200,signature=" + authMAC(authToken, "+1722859200", body), want: classMalformed},
		{name: "malformed beats allowed token", tokens: one, allowToken: true, tokenHdr: authToken, sigHdr: "invalid", want: classMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.body
			if b == nil {
				b = body
			}
			err := authAt(authNow, tc.allowToken).Verify(tc.tokens, tc.tokenHdr, tc.sigHdr, b)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			if !errors.Is(err, ErrUnauthorized) {
				t.Errorf("error %v does not wrap ErrUnauthorized", err)
			}
			if got := Class(err); got != tc.want {
				t.Errorf("class = %q, want %q", got, tc.want)
			}
			if want := "unauthorized: " + tc.want; err.Error() != want {
				t.Errorf("error text = %q, want %q", err.Error(), want)
			}
		})
	}
}

// TestVerifyDefaultsAndClock checks the zero-value settings: MaxAge ≤ 0 is the
// 5-minute default, and a nil Now means the real clock.
func TestVerifyDefaultsAndClock(t *testing.T) {
	body := []byte(authBodyText)
	tokens := []string{authToken}
	zero := Authenticator{Now: func() time.Time { return authNow }}
	if err := zero.Verify(tokens, "", authSign(authToken, authNowUnix-299, body), body); err != nil {
		t.Errorf("zero MaxAge rejects 299 s old: %v", err)
	}
	if err := zero.Verify(tokens, "", authSign(authToken, authNowUnix-301, body), body); Class(err) != "stale timestamp" {
		t.Errorf("zero MaxAge, 301 s old: got %v, want stale", err)
	}
	if err := zero.Verify(tokens, authToken, "", body); Class(err) != "token header not allowed" {
		t.Errorf("zero value must not accept the token header: %v", err)
	}
	narrow := Authenticator{MaxAge: 10 * time.Second, Now: func() time.Time { return authNow }}
	if err := narrow.Verify(tokens, "", authSign(authToken, authNowUnix-11, body), body); Class(err) != "stale timestamp" {
		t.Errorf("MaxAge 10s, 11 s old: got %v, want stale", err)
	}
	if err := narrow.Verify(tokens, "", authSign(authToken, authNowUnix+11, body), body); Class(err) != "future timestamp" {
		t.Errorf("MaxAge 10s, 11 s ahead: got %v, want future", err)
	}
	realClock := Authenticator{}
	if err := realClock.Verify(tokens, "", authSign(authToken, time.Now().Unix(), body), body); err != nil {
		t.Errorf("nil Now rejects a fresh signature: %v", err)
	}
	if err := realClock.Verify(tokens, "", authSign(authToken, authNowUnix, body), body); Class(err) != "stale timestamp" {
		t.Errorf("nil Now accepts a 2024 timestamp: %v", err)
	}
}

// TestVerifySignatureOverRawBytes: the MAC covers the bytes as received, so
// any change a JSON round trip or a proxy might make breaks it.
func TestVerifySignatureOverRawBytes(t *testing.T) {
	raw := []byte("{\n  \"event\": \"build.finished\",\n  \"build\": {\"id\": \"b1\", \"state\": \"failed\", \"number\": 1234}\n}")
	hdr := authSign(authToken, authNowUnix, raw)
	a := authAt(authNow, false)
	tokens := []string{authToken}
	if err := a.Verify(tokens, "", hdr, raw); err != nil {
		t.Fatalf("original bytes rejected: %v", err)
	}

	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	remarshalled, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, raw, "", "\t"); err != nil {
		t.Fatal(err)
	}
	variants := map[string][]byte{
		"trailing newline added": append(slices.Clone(raw), '\n'),
		"compacted":              compact.Bytes(),
		"re-marshalled":          remarshalled,
		"re-indented":            indented.Bytes(),
		"CRLF":                   bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n")),
		"last byte dropped":      raw[:len(raw)-1],
	}
	for name, b := range variants {
		if bytes.Equal(b, raw) {
			t.Fatalf("%s: variant equals the original; the test would prove nothing", name)
		}
		if err := a.Verify(tokens, "", hdr, b); Class(err) != "signature mismatch" {
			t.Errorf("%s: got %v, want signature mismatch", name, err)
		}
	}
}

// TestAuthErrorsDoNotLeak: no error text may carry the token, the
// signature, the header or the body.
func TestAuthErrorsDoNotLeak(t *testing.T) {
	const (
		tok     = "TOKEN-SENTINEL-7f3a"
		bodySec = "BODY-SENTINEL-91c2"
	)
	body := []byte(`{"event":"build.finished","secret":"` + bodySec + `"}`)
	good := authSign(tok, authNowUnix, body)
	wrongSig := authSign(tok+"x", authNowUnix, body)
	sigHex := good[strings.Index(good, "signature=")+len("signature="):]
	wrongHex := wrongSig[strings.Index(wrongSig, "signature=")+len("signature="):]
	forbidden := []string{tok, bodySec, sigHex, wrongHex, sigHex[:16], wrongHex[:16], "HDR-SENTINEL", "1722859"}

	type call struct {
		allow          bool
		tokens         []string
		tokHdr, sigHdr string
	}
	calls := []call{
		{tokens: nil, tokHdr: tok, sigHdr: good},
		{tokens: []string{tok}, allow: true},
		{tokens: []string{tok}, tokHdr: tok},
		{tokens: []string{tok}, allow: true, tokHdr: tok + "HDR-SENTINEL"},
		{tokens: []string{tok}, allow: true, tokHdr: "HDR-SENTINEL"},
		{tokens: []string{tok}, sigHdr: wrongSig},
		{tokens: []string{tok}, sigHdr: authSign(tok, authNowUnix-3600, body)},
		{tokens: []string{tok}, sigHdr: authSign(tok, authNowUnix+3600, body)},
		{tokens: []string{tok}, sigHdr: "timestamp=HDR-SENTINEL,signature=" + sigHex},
		{tokens: []string{tok}, sigHdr: "timestamp=1722859200,signature=HDR-SENTINEL"},
		{tokens: []string{tok}, sigHdr: "HDR-SENTINEL"},
		{tokens: []string{tok}, sigHdr: "HDR-SENTINEL=1,HDR-SENTINEL=2"},
		{tokens: []string{tok}, sigHdr: good + "," + good},
	}
	seen := map[string]bool{}
	for i, c := range calls {
		err := authAt(authNow, c.allow).Verify(c.tokens, c.tokHdr, c.sigHdr, body)
		if err == nil {
			t.Fatalf("call %d accepted; the leak check needs a failure", i)
		}
		seen[Class(err)] = true
		for _, f := range forbidden {
			if strings.Contains(err.Error(), f) {
				t.Errorf("call %d: error %q contains %q", i, err.Error(), f)
			}
		}
		if c.sigHdr != "" {
			if _, _, perr := ParseSignature(c.sigHdr); perr != nil {
				for _, f := range forbidden {
					if strings.Contains(perr.Error(), f) {
						t.Errorf("call %d: ParseSignature error %q contains %q", i, perr.Error(), f)
					}
				}
			}
		}
	}
	// Every failure class went through the check above.
	for _, class := range []string{"no token configured", "no credentials", "token header not allowed", "token mismatch", classMalformed, "stale timestamp", "future timestamp", "signature mismatch"} {
		if !seen[class] {
			t.Errorf("class %q not exercised", class)
		}
	}
}

func TestParseSignature(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	want32, _ := hex.DecodeString(hex64)
	tests := []struct {
		in     string
		ts     int64
		detail string // "" = ok
	}{
		{in: "timestamp=1619071700,signature=" + hex64, ts: 1619071700},
		{in: "signature=" + hex64 + ",timestamp=1619071700", ts: 1619071700},
		{in: "timestamp = 1 , signature = " + hex64, ts: 1},
		{in: "  timestamp=0,signature=" + hex64 + "  ", ts: 0},
		{in: "timestamp=9223372036854775807,signature=" + hex64, ts: 9223372036854775807},
		{in: "timestamp=1,signature=" + strings.ToUpper(hex64), ts: 1},
		{in: "foo=bar,timestamp=1,signature=" + hex64 + ",v=", ts: 1},
		{in: "timestamp=1,signature=" + hex64 + ",x=a=b", ts: 1},

		{in: "", detail: "empty part"},
		{in: "   ", detail: "empty part"},
		{in: ",", detail: "empty part"},
		{in: "timestamp=1,,signature=" + hex64, detail: "empty part"},
		{in: "timestamp=1,signature=" + hex64 + ",", detail: "empty part"},
		{in: "a,b", detail: "part without '='"},
		{in: "invalid", detail: "part without '='"},
		{in: "=,=", detail: "empty key"},
		{in: "timestamp=1,signature=" + hex64 + ",=x", detail: "empty key"},
		{in: "timestamp=1", detail: "missing signature"},
		{in: "signature=" + hex64, detail: "missing timestamp"},
		{in: "Timestamp=1,Signature=" + hex64, detail: "missing timestamp"},
		{in: "timestamp=1,timestamp=2,signature=" + hex64, detail: "duplicate timestamp"},
		{in: "timestamp=1,signature=" + hex64 + ",signature=" + hex64, detail: "duplicate signature"},
		{in: "timestamp=abc,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=,signature=", detail: "timestamp not a non-negative integer"},
		{in: "timestamp=-1,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=+1,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=1.5,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=1e9,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=1 2,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=9223372036854775808,signature=" + hex64, detail: "timestamp not a non-negative integer"},
		{in: "timestamp=1,signature=", detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=" + hex64[:62], detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=" + hex64[:63], detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=" + hex64 + "0", detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=" + hex64[:63] + "g", detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=" + strings.Repeat("zz", 32), detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=sha256=" + hex64, detail: "signature not 64 hex digits"},
		{in: "timestamp=1,signature=" + hex64[:32] + " " + hex64[33:], detail: "signature not 64 hex digits"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			ts, sig, err := ParseSignature(tc.in)
			if tc.detail != "" {
				if err == nil {
					t.Fatalf("accepted (ts=%d), want error %q", ts, tc.detail)
				}
				if want := "unauthorized: " + classMalformed + ": " + tc.detail; err.Error() != want {
					t.Errorf("error = %q, want %q", err.Error(), want)
				}
				if !errors.Is(err, ErrUnauthorized) || Class(err) != classMalformed {
					t.Errorf("error %v: Is(ErrUnauthorized)=%v class=%q", err, errors.Is(err, ErrUnauthorized), Class(err))
				}
				if ts != 0 || sig != nil {
					t.Errorf("failure returned values ts=%d sig=%x", ts, sig)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if ts != tc.ts {
				t.Errorf("ts = %d, want %d", ts, tc.ts)
			}
			if !bytes.Equal(sig, want32) {
				t.Errorf("sig = %x, want %x", sig, want32)
			}
		})
	}
}

func TestSplitTokens(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\n \r\n\t\n", nil},
		{"tok", []string{"tok"}},
		{"  tok \r\n", []string{"tok"}},
		{"old\nnew", []string{"old", "new"}},
		{"old\r\nnew\r\n", []string{"old", "new"}},
		{"\n\n old \n\n new \n", []string{"old", "new"}},
		{"a\nb\nc", []string{"a", "b"}},
		{"a b\nc", []string{"a b", "c"}},
	}
	for _, tc := range tests {
		if got := SplitTokens(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SplitTokens(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// A rotated pair from the secret verifies with either token.
	body := []byte(authBodyText)
	tokens := SplitTokens(authToken + "\r\n" + authToken2 + "\n")
	for _, tok := range []string{authToken, authToken2} {
		if err := authAt(authNow, true).Verify(tokens, "", authSign(tok, authNowUnix, body), body); err != nil {
			t.Errorf("signature with a rotation token rejected: %v", err)
		}
	}
}

func TestAuthClass(t *testing.T) {
	if got := Class(nil); got != "" {
		t.Errorf("Class(nil) = %q", got)
	}
	if got := Class(errors.New("other")); got != "unknown" {
		t.Errorf("Class(foreign) = %q", got)
	}
	err := authAt(authNow, false).Verify([]string{authToken}, authToken, "", nil)
	wrapped := fmt.Errorf("receiver: %w", err)
	if got := Class(wrapped); got != "token header not allowed" {
		t.Errorf("Class(wrapped) = %q", got)
	}
	if !errors.Is(wrapped, ErrUnauthorized) {
		t.Error("wrapped error lost ErrUnauthorized")
	}
}

// authParseMessages are the only texts ParseSignature may return: fixed
// strings, so no input can leak through them.
var authParseMessages = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range []error{errEmptyPart, errNoEquals, errEmptyKey, errDupTimestamp, errDupSignature, errNoTimestamp, errNoSignature, errBadTimestamp, errBadSignature} {
		m[e.Error()] = true
	}
	return m
}()

func FuzzParseSignature(f *testing.F) {
	hex64 := strings.Repeat("ab", 32)
	for _, s := range []string{
		"timestamp=1619071700,signature=" + hex64,
		"signature=" + hex64 + ",timestamp=1",
		" timestamp = 1 , signature = " + hex64,
		"", " ", ",", "=", "=,=", "a,b", "invalid", "timestamp=1",
		"timestamp=abc,signature=" + hex64, "timestamp=,signature=",
		"timestamp=-1,signature=" + hex64, "timestamp=99999999999999999999,signature=" + hex64,
		"timestamp=1,signature=" + hex64[:63] + "\xff",
		"timestamp=1,timestamp=1,signature=" + hex64,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		ts, sig, err := ParseSignature(h)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) || Class(err) != classMalformed {
				t.Fatalf("error %v is not a malformed-header error", err)
			}
			if !authParseMessages[err.Error()] {
				t.Fatalf("error %q is not one of the fixed messages", err.Error())
			}
			return
		}
		if len(sig) != sha256.Size {
			t.Fatalf("ok with %d-byte signature", len(sig))
		}
		if ts < 0 {
			t.Fatalf("ok with negative timestamp %d", ts)
		}
		// Whatever parses must also go through Verify without panicking.
		_ = authAt(authNow, false).Verify([]string{authToken}, "", h, []byte(h))
	})
}

// authBenchBody is a 5 KB JSON webhook body; HMAC cost depends only on the
// length.
func authBenchBody() []byte {
	var b bytes.Buffer
	b.WriteString(`{"event":"build.finished","build":{"id":"0190f3a2-1111-4a2b-9c3d-000000000000","state":"failed","message":"`)
	for b.Len() < 5*1024-3 {
		b.WriteString("x")
	}
	b.WriteString(`"}}`)
	return b.Bytes()
}

func BenchmarkVerify(b *testing.B) {
	body := authBenchBody()
	a := authAt(authNow, true)
	for _, bc := range []struct {
		name   string
		tokens []string
		sign   string
	}{
		{"signature/1token", []string{authToken}, authToken},
		{"signature/2tokens", []string{authToken, authToken2}, authToken2},
	} {
		hdr := authSign(bc.sign, authNowUnix, body)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := a.Verify(bc.tokens, "", hdr, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("token", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := a.Verify([]string{authToken, authToken2}, authToken2, "", body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
