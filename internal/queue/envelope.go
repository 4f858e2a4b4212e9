// Package queue holds the receiver → dispatcher message (DESIGN §4) and the
// SQS FIFO publisher.
package queue

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/callgoose/buildkite-sqibs/internal/buildkite"
)

// Version is the envelope version this code writes and reads.
const Version = 1

// Envelope is the queue message body.
type Envelope struct {
	V          int                `json:"v"`
	Event      string             `json:"event"`
	RequestID  string             `json:"request_id"`
	ReceivedAt time.Time          `json:"received_at"`
	Payload    *buildkite.Payload `json:"payload"`
	// Origin and Reason are set only on messages no webhook sent (see
	// Note). Both are optional and omitted when empty, so webhook messages
	// are unchanged and a v1 reader that does not know them ignores them.
	Origin string `json:"origin,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// OriginReconciler is Envelope.Origin on a resolve the reconciler queued
// because Buildkite's API says the incident is over (DESIGN §9).
const OriginReconciler = "reconciler"

// Note is what a message that no webhook sent says about itself.
type Note struct {
	Origin string // who queued it, e.g. OriginReconciler
	Reason string // why, for the incident description: a fixed phrase, never caller data
}

// Message is one message to publish.
type Message struct {
	Body    []byte
	GroupID string // MessageGroupId: the incident id, so one incident stays in order
	DedupID string // MessageDeduplicationId: the event identity hash
}

// Publisher sends one message and returns its id. The receiver depends on
// this, so the SQS publisher and the in-process dev queue are interchangeable.
type Publisher interface {
	Publish(ctx context.Context, m Message) (id string, err error)
}

// NewMessage builds the v1 envelope for p and its FIFO attributes.
func NewMessage(p *buildkite.Payload, groupID, requestID string, receivedAt time.Time) (Message, error) {
	return NewNotedMessage(p, groupID, requestID, receivedAt, Note{})
}

// NewNotedMessage is NewMessage for a message no webhook sent: n fills the
// envelope's origin and reason.
func NewNotedMessage(p *buildkite.Payload, groupID, requestID string, receivedAt time.Time, n Note) (Message, error) {
	// v2 encodes without the validation pass v1 makes over every
	// MarshalJSON result; the output is the same JSON.
	body, err := jsonv2.Marshal(Envelope{
		V:          Version,
		Event:      p.Event,
		RequestID:  requestID,
		ReceivedAt: receivedAt.UTC().Truncate(time.Millisecond),
		Payload:    p,
		Origin:     n.Origin,
		Reason:     n.Reason,
	}, jsontext.AllowInvalidUTF8(true))
	if err != nil {
		return Message{}, fmt.Errorf("encode envelope: %w", err)
	}
	return Message{Body: body, GroupID: groupID, DedupID: DedupID(p)}, nil
}

// DedupID is the SHA-256 (hex) of the event identity (DESIGN §4): event
// name, build id, build state, blocked, job id, job state, retries count,
// and the event's own time (finished_at, failing_at, or the job's
// finished_at). Two deliveries of the same webhook share it; any change
// that matters to an incident does not: a build that fails, passes on a
// retry and fails again has a new finished_at, so the second failure is
// not taken for a redelivery of the first.
func DedupID(p *buildkite.Payload) string {
	h := sha256.New()
	var buf [128]byte
	b := buf[:0]
	add := func(s string) {
		b = strconv.AppendInt(b, int64(len(s)), 10) // length prefix: no ambiguity between fields
		b = append(b, ':')
		b = append(b, s...)
		h.Write(b)
		b = b[:0]
	}
	build, job := [3]string{"", "", "false"}, [3]string{"", "", "0"} // the identity of an absent build or job
	if b := p.Build; b != nil {
		build = [3]string{b.ID, b.State, strconv.FormatBool(b.Blocked)}
	}
	if j := p.Job; j != nil {
		job = [3]string{j.ID, j.State, strconv.Itoa(j.RetriesCount)}
	}
	for _, f := range [...]string{p.Event, build[0], build[1], build[2], job[0], job[1], job[2], EventTime(p).String()} {
		add(f)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// EventTime is the event's own time: the job's finished_at for job events,
// failing_at for build.failing, finished_at otherwise; zero when the
// payload has none.
func EventTime(p *buildkite.Payload) buildkite.Time {
	switch {
	case p.Job != nil && p.Event == "job.finished":
		return p.Job.FinishedAt
	case p.Build == nil:
		return buildkite.Time{}
	case p.Event == "build.failing":
		return p.Build.FailingAt
	default:
		return p.Build.FinishedAt
	}
}

// ErrUnknownVersion marks an envelope this code cannot read.
var ErrUnknownVersion = errors.New("unknown envelope version")

// Decode reads an envelope and checks its version. A "v" other than the
// number 1 is ErrUnknownVersion even when the rest has another shape, so a
// future version is named as such rather than as unreadable.
func Decode(body []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		var v struct {
			V json.RawMessage `json:"v"`
		}
		if json.Unmarshal(body, &v) == nil && string(v.V) != strconv.Itoa(Version) {
			// %.32s: the value is the message's, and a log line must stay small.
			return nil, fmt.Errorf("%w: v=%.32s, this dispatcher reads v=%d", ErrUnknownVersion, cmp.Or(string(v.V), "(none)"), Version)
		}
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	if e.V != Version {
		return nil, fmt.Errorf("%w: v=%d, this dispatcher reads v=%d", ErrUnknownVersion, e.V, Version)
	}
	if e.Payload == nil {
		return nil, errors.New("decode envelope: no payload")
	}
	if e.Payload.Event == "" {
		e.Payload.Event = e.Event
	}
	// Held to the receiver's bounds whoever wrote the message (an older
	// receiver, a redrive, a hand-made event file), the note included.
	e.Payload.Sanitize()
	e.Origin, e.Reason = buildkite.Word(e.Origin), buildkite.Subject(e.Reason)
	return &e, nil
}
