// Package memqueue is an in-process stand-in for an SQS FIFO queue, so that
// `make dev` and end-to-end tests feed the dispatcher's Lambda handler the
// same way the SQS event source mapping does (DESIGN §6).
//
// It keeps the SQS FIFO semantics the dispatcher relies on:
//   - messages of one group are delivered strictly in order, and while any
//     message of a group is in flight (received, not deleted, visibility not
//     expired) no other message of that group is delivered;
//   - a message whose visibility expires becomes visible again with a new
//     receipt handle; the old handle is then invalid (as in FIFO queues);
//   - after MaxReceives receives without a delete, the message moves to the
//     dead letters (the redrive policy) with reason "max_receives"; the
//     default is the template's maxReceiveCount (queue.MaxReceiveCount);
//   - every dead letter, the redrive's or one the dispatcher sends, is
//     logged at ERROR with its reason, message id and group (the incident).
//   - a DedupID already sent within DedupWindow enqueues nothing and returns
//     the first message's id.
//
// Options.Now drives timestamps, visibility and dedup expiry; long-poll waits
// themselves run on real timers.
package memqueue

import (
	"cmp"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/queue"
	"github.com/callgoose/buildkite-sqibs/internal/uuid"
)

// Defaults, matching the SQS queue the template creates and SQS FIFO itself.
const (
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultMaxReceives       = queue.MaxReceiveCount
	DefaultDedupWindow       = 5 * time.Minute
	DefaultARN               = "arn:aws:sqs:local:000000000000:bridge.fifo"

	// MaxBatch is the largest batch one Receive returns (SQS's limit).
	MaxBatch = 10
	// MaxBodyBytes is SQS's message size limit: a body SQS would refuse
	// is refused here too, so dev does not hide it.
	MaxBodyBytes = 1 << 20
	// MaxVisibility is SQS's longest visibility timeout.
	MaxVisibility = 12 * time.Hour

	// ReasonMaxReceives is the dead-letter reason of a message received
	// MaxReceives times without being deleted.
	ReasonMaxReceives = "max_receives"
)

var (
	// ErrClosed is returned by Publish and Receive after Close.
	ErrClosed = errors.New("memqueue: queue closed")
	// ErrStaleHandle is returned for a receipt handle that is not (or no
	// longer) that of an in-flight message: deleted, expired or unknown.
	ErrStaleHandle = errors.New("memqueue: receipt handle is not in flight (deleted, visibility expired, or unknown)")
)

// Options configures a Queue; zero values take the defaults.
type Options struct {
	VisibilityTimeout time.Duration
	MaxReceives       int
	DedupWindow       time.Duration
	ARN               string
	Now               func() time.Time // for tests; default time.Now
	Log               *slog.Logger     // where dead letters are reported; default slog.Default()
}

// Dead is a message in the dead letters.
type Dead struct {
	Message events.SQSMessage
	Reason  string
	At      time.Time
}

// Stats counts the messages in the queue. Visible includes messages of
// groups blocked by an in-flight message, like SQS's
// ApproximateNumberOfMessagesVisible.
type Stats struct {
	Visible, InFlight, Dead int
}

type message struct {
	id, body, group, dedup string
	seq                    uint64
	sent, firstReceive     time.Time
	receives               int
	handle                 string    // current receipt handle; "" when not in flight
	visibleAt              time.Time // end of the current visibility timeout
}

type group struct {
	msgs     []*message // in send order
	inflight int
}

type dedupEntry struct {
	key, id string
	at      time.Time
}

// Queue is an in-process SQS FIFO queue. It is safe for concurrent use.
type Queue struct {
	o               Options
	region, account string

	mu       sync.Mutex
	groups   map[string]*group
	byID     map[string]*message
	inflight map[string]*message  // by receipt handle
	tomb     map[string]time.Time // handles of messages dead-lettered in flight → their expiry
	dedup    map[string]string    // dedup id → message id
	dedupQ   []dedupEntry         // in send order, to expire dedup entries
	dead     []Dead
	seq      uint64
	total    int
	changed  chan struct{} // closed and replaced on every change: wakes long polls
	done     chan struct{}
	closed   bool

	onWait func() // test hook: a Receive is about to block
}

var _ queue.Publisher = (*Queue)(nil)

// New returns an empty queue.
func New(o Options) *Queue {
	if o.VisibilityTimeout <= 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if o.MaxReceives <= 0 {
		o.MaxReceives = DefaultMaxReceives
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.ARN == "" {
		o.ARN = DefaultARN
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	q := &Queue{
		o:        o,
		region:   "local",
		account:  "000000000000",
		groups:   map[string]*group{},
		byID:     map[string]*message{},
		inflight: map[string]*message{},
		tomb:     map[string]time.Time{},
		dedup:    map[string]string{},
		changed:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	// arn:aws:sqs:<region>:<account>:<name>
	if p := strings.Split(o.ARN, ":"); len(p) == 6 {
		q.region, q.account = p[3], p[4]
	}
	return q
}

// ARN is the queue's ARN, the EventSourceARN of every message it delivers.
func (q *Queue) ARN() string { return q.o.ARN }

// Publish enqueues m and returns its message id. GroupID and DedupID are
// made SQS-safe as the SQS publisher does (queue.SafeFIFOID); an empty
// DedupID means content-based deduplication (SHA-256 of the body), as on a
// FIFO queue with ContentBasedDeduplication.
func (q *Queue) Publish(ctx context.Context, m queue.Message) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("memqueue: publish: %w", err)
	}
	if len(m.Body) == 0 {
		return "", errors.New("memqueue: publish: empty message body")
	}
	if len(m.Body) > MaxBodyBytes {
		return "", fmt.Errorf("memqueue: publish: body of %d bytes is over the SQS limit of %d", len(m.Body), MaxBodyBytes)
	}
	dedup := m.DedupID
	if dedup == "" {
		sum := sha256.Sum256(m.Body)
		dedup = hex.EncodeToString(sum[:])
	}
	dedup = queue.SafeFIFOID(dedup)
	grp := queue.SafeFIFOID(m.GroupID)

	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return "", ErrClosed
	}
	now := q.o.Now()
	q.expireDedupLocked(now)
	if id, ok := q.dedup[dedup]; ok {
		return id, nil
	}
	q.seq++
	msg := &message{id: uuid.New(), body: string(m.Body), group: grp, dedup: dedup, seq: q.seq, sent: now}
	g := q.groups[grp]
	if g == nil {
		g = &group{}
		q.groups[grp] = g
	}
	g.msgs = append(g.msgs, msg)
	q.byID[msg.id] = msg
	q.total++
	q.dedup[dedup] = msg.id
	q.dedupQ = append(q.dedupQ, dedupEntry{key: dedup, id: msg.id, at: now})
	q.broadcastLocked()
	return msg.id, nil
}

func (q *Queue) expireDedupLocked(now time.Time) {
	i := 0
	for ; i < len(q.dedupQ) && !now.Before(q.dedupQ[i].at.Add(q.o.DedupWindow)); i++ {
		delete(q.dedup, q.dedupQ[i].key)
	}
	if i > 0 {
		q.dedupQ = slices.Delete(q.dedupQ, 0, i)
	}
}

// Receive long-polls: it returns as soon as at least one message can be
// delivered (up to n, at most MaxBatch), or with none after wait. Several
// messages of one group may come in one batch, in order. It returns ctx's
// error when ctx ends first, and ErrClosed once the queue is closed.
func (q *Queue) Receive(ctx context.Context, n int, wait time.Duration) ([]events.SQSMessage, error) {
	n = min(max(n, 1), MaxBatch)
	deadline := time.Now().Add(wait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		now := q.o.Now()
		next := q.sweepLocked(now)
		out := q.takeLocked(now, n)
		changed := q.changed
		hook := q.onWait
		q.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}

		d := time.Until(deadline)
		if d <= 0 {
			return nil, nil
		}
		if !next.IsZero() {
			d = min(d, max(next.Sub(now), 0))
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		if hook != nil {
			hook()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-timer.C:
		}
	}
}

// sweepLocked ends expired visibility timeouts (moving messages received
// MaxReceives times to the dead letters) and forgets expired tombstones. It
// returns the next visibility expiry, zero if nothing is in flight.
func (q *Queue) sweepLocked(now time.Time) (next time.Time) {
	var ended []*message
	for h, m := range q.inflight {
		if now.Before(m.visibleAt) {
			if next.IsZero() || m.visibleAt.Before(next) {
				next = m.visibleAt
			}
			continue
		}
		delete(q.inflight, h)
		m.handle = ""
		q.groups[m.group].inflight--
		ended = append(ended, m)
	}
	expired := len(ended) > 0
	// Dead letters in send order, as SQS FIFO moves a group's messages: the
	// map above comes in random order.
	slices.SortFunc(ended, func(a, b *message) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range ended {
		if m.receives >= q.o.MaxReceives {
			q.addDeadLocked(Dead{Message: q.eventLocked(m, ""), Reason: ReasonMaxReceives, At: now})
			q.removeLocked(m)
		}
	}
	for h, exp := range q.tomb {
		if !now.Before(exp) {
			delete(q.tomb, h)
		}
	}
	if expired {
		q.broadcastLocked()
	}
	return next
}

// takeLocked delivers up to n messages: groups with nothing in flight,
// oldest head first, each group as far as it goes (as SQS tries to return
// messages of the same group together).
func (q *Queue) takeLocked(now time.Time, n int) []events.SQSMessage {
	var ready []*group
	for _, g := range q.groups {
		if g.inflight == 0 && len(g.msgs) > 0 {
			ready = append(ready, g)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	slices.SortFunc(ready, func(a, b *group) int { return cmp.Compare(a.msgs[0].seq, b.msgs[0].seq) })
	var out []events.SQSMessage
	for _, g := range ready {
		for _, m := range g.msgs {
			if len(out) == n {
				return out
			}
			m.receives++
			if m.firstReceive.IsZero() {
				m.firstReceive = now
			}
			m.handle = rand.Text()
			m.visibleAt = now.Add(q.o.VisibilityTimeout)
			q.inflight[m.handle] = m
			g.inflight++
			out = append(out, q.eventLocked(m, m.handle))
		}
	}
	return out
}

// eventLocked is m as Lambda's SQS event source mapping presents it.
func (q *Queue) eventLocked(m *message, handle string) events.SQSMessage {
	sum := md5.Sum([]byte(m.body))
	attrs := map[string]string{
		"ApproximateReceiveCount": strconv.Itoa(m.receives),
		"SentTimestamp":           strconv.FormatInt(m.sent.UnixMilli(), 10),
		"SenderId":                q.account,
		"SequenceNumber":          fmt.Sprintf("%020d", m.seq),
		"MessageGroupId":          m.group,
		"MessageDeduplicationId":  m.dedup,
	}
	if !m.firstReceive.IsZero() {
		attrs["ApproximateFirstReceiveTimestamp"] = strconv.FormatInt(m.firstReceive.UnixMilli(), 10)
	}
	return events.SQSMessage{
		MessageId:         m.id,
		ReceiptHandle:     handle,
		Body:              m.body,
		Md5OfBody:         hex.EncodeToString(sum[:]),
		Attributes:        attrs,
		MessageAttributes: map[string]events.SQSMessageAttribute{},
		EventSourceARN:    q.o.ARN,
		EventSource:       "aws:sqs",
		AWSRegion:         q.region,
	}
}

// removeLocked drops m (not in flight) from the queue.
func (q *Queue) removeLocked(m *message) {
	g := q.groups[m.group]
	if i := slices.Index(g.msgs, m); i >= 0 {
		g.msgs = slices.Delete(g.msgs, i, i+1)
	}
	if len(g.msgs) == 0 && g.inflight == 0 {
		delete(q.groups, m.group)
	}
	delete(q.byID, m.id)
	q.total--
}

// takeInflightLocked ends m's flight without making it visible.
func (q *Queue) takeInflightLocked(m *message) {
	delete(q.inflight, m.handle)
	m.handle = ""
	q.groups[m.group].inflight--
}

// Delete removes the in-flight message with this receipt handle.
func (q *Queue) Delete(ctx context.Context, receiptHandle string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sweepLocked(q.o.Now())
	if _, ok := q.tomb[receiptHandle]; ok {
		// Already moved to the dead letters while in flight: deleting it
		// is what the consumer does next, and it is done.
		delete(q.tomb, receiptHandle)
		return nil
	}
	m, ok := q.inflight[receiptHandle]
	if !ok {
		return fmt.Errorf("memqueue: delete: %w", ErrStaleHandle)
	}
	q.takeInflightLocked(m)
	q.removeLocked(m)
	q.broadcastLocked() // its group may be free now
	return nil
}

// SetVisibility is ChangeMessageVisibility: the in-flight message becomes
// visible d from now; d = 0 makes it visible at once. It implements
// dispatcher.Visibility.
func (q *Queue) SetVisibility(ctx context.Context, sourceARN, receiptHandle string, d time.Duration) error {
	if sourceARN != q.o.ARN {
		return fmt.Errorf("memqueue: set visibility: unknown queue %q (this is %q)", sourceARN, q.o.ARN)
	}
	if d < 0 || d > MaxVisibility {
		return fmt.Errorf("memqueue: set visibility: timeout %s outside 0..%s", d, MaxVisibility)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.o.Now()
	q.sweepLocked(now)
	m, ok := q.inflight[receiptHandle]
	if !ok {
		return fmt.Errorf("memqueue: set visibility: %w", ErrStaleHandle)
	}
	m.visibleAt = now.Add(d)
	if d == 0 {
		q.sweepLocked(now)
	}
	q.broadcastLocked() // long polls recompute their next expiry
	return nil
}

// DeadLetter records m in the dead letters with reason, and removes the
// message from the queue so it is never delivered again. If it is in
// flight, a Delete of its receipt handle still succeeds, as it would on SQS
// where the dead-letter queue is a separate queue. It implements
// dispatcher.DeadLetters.
func (q *Queue) DeadLetter(ctx context.Context, m events.SQSMessage, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.o.Now()
	q.sweepLocked(now)
	if msg, ok := q.byID[m.MessageId]; ok {
		if msg.handle != "" {
			q.tomb[msg.handle] = msg.visibleAt
			q.takeInflightLocked(msg)
		}
		q.removeLocked(msg)
		q.broadcastLocked()
	}
	q.addDeadLocked(Dead{Message: m, Reason: reason, At: now})
	return nil
}

// addDeadLocked records d and says so loudly: a dead letter is an event
// that did not reach SQIBS, and in `make dev` nothing else would show it.
func (q *Queue) addDeadLocked(d Dead) {
	q.dead = append(q.dead, d)
	q.o.Log.Error("message moved to the dead letters",
		"reason", d.Reason, "message_id", d.Message.MessageId,
		"incident_id", d.Message.Attributes["MessageGroupId"],
		"receives", d.Message.Attributes["ApproximateReceiveCount"])
}

// DeadLetters returns a copy of the dead letters, oldest first.
func (q *Queue) DeadLetters() []Dead {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sweepLocked(q.o.Now())
	return slices.Clone(q.dead)
}

// Left returns the messages still queued (visible or in flight), in send
// order: what a process that exits now loses.
func (q *Queue) Left() []events.SQSMessage {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sweepLocked(q.o.Now())
	msgs := make([]*message, 0, q.total)
	for _, g := range q.groups {
		msgs = append(msgs, g.msgs...)
	}
	slices.SortFunc(msgs, func(a, b *message) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]events.SQSMessage, len(msgs))
	for i, m := range msgs {
		out[i] = q.eventLocked(m, m.handle)
	}
	return out
}

// Stats counts the messages now.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sweepLocked(q.o.Now())
	return Stats{Visible: q.total - len(q.inflight), InFlight: len(q.inflight), Dead: len(q.dead)}
}

// Close wakes every long poll (they return ErrClosed) and refuses further
// publishes. Delete and SetVisibility keep working so a poller can finish
// the batch in hand.
func (q *Queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	close(q.done)
	q.broadcastLocked()
}

// Done is closed by Close (poller.Run stops on it).
func (q *Queue) Done() <-chan struct{} { return q.done }

func (q *Queue) broadcastLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}
