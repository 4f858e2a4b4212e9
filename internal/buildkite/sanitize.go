package buildkite

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// Bounds on caller strings (DESIGN §5). Every string a webhook carries can
// reach an incident id, a queue message, the SQIBS payload or a log line,
// so each is cut to a size that keeps those small whatever Buildkite (or an
// attacker holding the token) sends: a 400 KB branch name must not become
// two 400 KB log lines and an SQIBS 413.
const (
	MaxIdent = 255  // branch, slugs, step key, ids: parts of an incident id
	MaxName  = 200  // display names and labels
	maxWord  = 64   // enumerated words: states, types, sources, reasons
	maxURL   = 1024 // links; a longer one is not a Buildkite URL
)

// Sanitize bounds every string of p and removes anything that looks like
// an e-mail address from all of them: names (author name and username,
// job name and label, pipeline name) as DESIGN §5 asks, and also branches,
// keys, ids and URLs, so no address reaches a log line, a queue message or
// the SQIBS payload whichever field carried it. Parse calls it; so does
// the dispatcher on what it reads from the queue, so a message written by
// any producer is held to the same bounds. It is idempotent.
func (p *Payload) Sanitize() {
	// The fields by the bound they take, gathered then bounded; arrays on
	// the stack, so the receiver's hot path allocates nothing more.
	var idents, words, urls, names [16]*string
	id, wd, ul, nm := idents[:0], words[:0], urls[:0], names[:0]
	wd = append(wd, &p.Event)
	if b := p.Build; b != nil {
		id = append(id, &b.ID, &b.Commit, &b.Branch)
		wd = append(wd, &b.State, &b.Source)
		ul = append(ul, &b.URL, &b.WebURL)
		b.Message = Subject(b.Message)
		if a := b.Author; a != nil {
			a.Name, a.Username = personName(a.Name), personName(a.Username)
		}
		if pr := b.PullRequest; pr != nil {
			pr.ID = FlexString(Ident(string(pr.ID)))
			id = append(id, &pr.Base)
		}
		if r := b.RebuiltFrom; r != nil {
			id = append(id, &r.ID)
		}
		if t := b.TriggeredFrom; t != nil {
			id = append(id, &t.BuildID, &t.BuildPipelineSlug)
		}
	}
	if j := p.Job; j != nil {
		id = append(id, &j.ID, &j.StepKey)
		wd = append(wd, &j.Type, &j.State, &j.SignalReason)
		ul = append(ul, &j.WebURL)
		nm = append(nm, &j.Name, &j.Label)
		if r := j.RetrySource; r != nil {
			id = append(id, &r.JobID)
			wd = append(wd, &r.RetryType)
		}
	}
	if pl := p.Pipeline; pl != nil {
		id = append(id, &pl.ID, &pl.Slug, &pl.DefaultBranch)
		ul = append(ul, &pl.URL, &pl.WebURL)
		nm = append(nm, &pl.Name)
	}
	for _, set := range [...]struct {
		fields []*string
		bound  func(string) string
	}{{id, Ident}, {wd, Word}, {ul, clipURL}, {nm, Name}} {
		for _, f := range set.fields {
			*f = set.bound(*f)
		}
	}
}

// Ident bounds an identifier to MaxIdent bytes, addresses redacted. A longer one keeps a
// readable prefix and ends in "~" and 16 hex digits of the SHA-256 of the
// whole value, so two long identifiers that share a prefix stay distinct
// (they become incident ids and FIFO groups). Idempotent: a bounded value
// is returned unchanged.
func Ident(s string) string {
	s = RedactEmails(s)
	if len(s) <= MaxIdent {
		return validUTF8(s)
	}
	sum := sha256.Sum256([]byte(s))
	suffix := "~" + hex.EncodeToString(sum[:8])
	return validUTF8(cutRunes(s, MaxIdent-len(suffix))) + suffix
}

// Name bounds a display string to MaxName bytes (ending in "…" when cut)
// and redacts e-mail addresses in it.
func Name(s string) string {
	return Clip(RedactEmails(s), MaxName)
}

// Word bounds an enumerated value (a state, a type, an event name). Real
// values are short words; anything longer is not one of them and is cut.
func Word(s string) string { return validUTF8(cutRunes(RedactEmails(s), maxWord)) }

func clipURL(s string) string { return validUTF8(cutRunes(RedactEmails(s), maxURL)) }

// personName is Name for an author's name or username, where a value that
// is only an address (Git lets authors put one there) is dropped rather
// than kept as "[email]", so Display falls back to the other field.
func personName(s string) string {
	r := RedactEmails(s)
	if r != s && strings.Trim(strings.ReplaceAll(r, redacted, ""), " <>()[],;:\"'") == "" {
		return ""
	}
	return Clip(r, MaxName)
}

// Clip cuts s to at most max bytes on a rune boundary, marking the cut
// (the "…" counts), valid UTF-8: for every caller string that reaches a
// title, a log line or an error.
func Clip(s string, max int) string {
	if len(s) <= max {
		return validUTF8(s)
	}
	const ellipsis = "…"
	return validUTF8(strings.TrimSpace(cutRunes(s, max-len(ellipsis)))) + ellipsis
}

// cutRunes is s cut to at most n bytes without splitting a UTF-8 sequence.
func cutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

const redacted = "[email]"

// RedactEmails replaces every e-mail address in s with "[email]": a run of
// local-part characters, "@", and a domain with a dot whose last label is
// at least two letters. "npm@10.2.0", "@v2" and "build@main" are left
// alone; "jane@example.com" and "<jane@example.com>" are not.
func RedactEmails(s string) string {
	if strings.IndexByte(s, '@') < 0 {
		return s
	}
	var b strings.Builder
	last := 0 // s[:last] is written
	for i := 0; i < len(s); i++ {
		if s[i] != '@' || i < last {
			continue
		}
		start := i
		for start > last && isLocal(s[start-1]) {
			start--
		}
		end := i + 1
		for end < len(s) && isDomain(s[end]) {
			end++
		}
		for end > i+1 && (s[end-1] == '.' || s[end-1] == '-') { // a trailing "." ends the sentence
			end--
		}
		if start == i || !emailDomain(s[i+1:end]) {
			continue
		}
		b.WriteString(s[last:start])
		b.WriteString(redacted)
		last = end
		i = end - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isLocal(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".!#$%&'*+/=?^_`{|}~-", c) >= 0
}

func isDomain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-'
}

// emailDomain reports whether d looks like the domain of an address: at
// least two labels, the last of two or more letters.
func emailDomain(d string) bool {
	dot := strings.LastIndexByte(d, '.')
	if dot <= 0 || len(d)-dot-1 < 2 {
		return false
	}
	for _, c := range []byte(d[dot+1:]) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
