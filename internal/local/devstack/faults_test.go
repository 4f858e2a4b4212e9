package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/local/poller"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

// The fault-injection run. `make test` runs it with the defaults below, in
// compressed time; `make soak` as a new user's `make dev` would see it:
// SOAK_PIPELINES=30 SOAK_BUILDS=8 in real time (SOAK_TIME_SCALE=1).
// SOAK_SEED replays a run's workload and fault plan; the seed is logged at
// the start of every run (go test shows it when the test fails, -v always).
const (
	defaultFaultPipelines = 12
	defaultFaultBuilds    = 8    // per pipeline
	defaultTimeScale      = 0.02 // test seconds per real-world second: backoffs, MAX_BACKOFF, RETRY_FOR
	faultSenders          = 4
	faultPercent          = 30 // of SQIBS calls, spread evenly over the four faults
	dupPercent            = 10 // of builds, delivered twice
	faultToken            = "fault-token"
)

var faultBranches = []string{"main", "develop", "release/2.x", "feature/login-form"}

// One build of the workload: a build.finished webhook of one group.
type fbuild struct {
	id     string // incident id = queue group
	group  int
	number int
	failed bool
	pos    int // position in the global send schedule
	dup    dupKind
	body   []byte
	msgID  string // what the receiver answered
}

type dupKind int

const (
	dupNone  dupKind = iota
	dupNow           // the same body again at once
	dupLater         // the same body again after the group's next build
)

type fgroup struct {
	id     string
	builds []*fbuild // in send order, build numbers increasing
	sender int
}

// delivered are the numbers of g's builds that reach SQIBS: all of them
// but the passes the incident state holds back (a pass after a pass; the
// first build finds no state, so it is sent whatever it is).
func (g *fgroup) delivered() []int {
	var out []int
	for i, b := range g.builds {
		if b.failed || i == 0 || g.builds[i-1].failed {
			out = append(out, b.number)
		}
	}
	return out
}

// faultPlan builds the workload from seed: pipelines groups (one branch of
// each pipeline, the branches taking turns), each a random sequence of
// builds failed and passed with increasing numbers, and a global schedule
// that interleaves the groups at random while keeping each group's own
// order.
func faultPlan(t *testing.T, seed uint64, pipelines, builds int) ([]*fgroup, []*fbuild) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	tmpl := map[bool][]byte{}
	for failed, file := range map[bool]string{true: "build_finished_failed.json", false: "build_finished_passed.json"} {
		tmpl[failed] = testkit.Fixture(t, file)
	}
	var groups []*fgroup
	for p := range pipelines {
		groups = append(groups, &fgroup{id: fmt.Sprintf("acme/service-%d/%s", p, faultBranches[p%len(faultBranches)])})
	}
	n := pipelines * builds
	// Senders own groups at random, so each sends for several pipelines and branches.
	for i, gi := range rng.Perm(len(groups)) {
		groups[gi].sender = i % faultSenders
	}
	slots := make([]int, 0, n) // group index per schedule position
	for i := range n {
		slots = append(slots, i%len(groups)) // builds per group
	}
	rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
	number := make([]int, len(groups))
	for gi := range groups {
		number[gi] = 1 + rng.IntN(1000)
	}
	schedule := make([]*fbuild, 0, n)
	for pos, gi := range slots {
		g := groups[gi]
		number[gi] += 1 + rng.IntN(3)
		b := &fbuild{id: g.id, group: gi, number: number[gi], failed: rng.IntN(2) == 0, pos: pos}
		if rng.IntN(100) < dupPercent {
			b.dup = dupNow + dupKind(rng.IntN(2))
		}
		b.body = faultBody(t, tmpl[b.failed], g.id, b)
		g.builds = append(g.builds, b)
		schedule = append(schedule, b)
	}
	for _, g := range groups {
		if last := g.builds[len(g.builds)-1]; last.dup == dupLater {
			last.dup = dupNow // no next build to send it after
		}
	}
	return groups, schedule
}

// faultBody is a real fixture rewritten to be build b of pipeline and
// branch id.
func faultBody(t *testing.T, fixture []byte, id string, b *fbuild) []byte {
	t.Helper()
	parts := strings.SplitN(id, "/", 3) // org, pipeline, branch
	body, err := buildWebhook(fixture, parts[1], parts[2], b.number, b.failed)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// A processed SQIBS call, as the fault hook saw it.
type fcall struct {
	number        int
	failed        bool
	whileStopped  bool // hooked while the dispatcher was stopped
	sentInTheStop bool // its build was first sent after StopDispatcher returned
}

type fkey struct {
	id     string
	number int
}

// faultRecorder is the simulator's fault hook: it fails about faultPercent
// of the calls, deciding from (seed, id, build, attempt) so that a
// message's fate replays with the seed whatever the interleaving, and
// records, per incident id, every call it lets the simulator process, in
// the order the calls arrive.
type faultRecorder struct {
	seed      uint64
	stopGate  int          // schedule positions from here were sent while stopped
	pos       map[fkey]int // read-only after setup
	mu        sync.Mutex
	attempts  map[fkey]int // POSTs per build
	calls     map[string][]fcall
	faults    map[string]int // by kind
	processed int
	stopped   bool
}

func (r *faultRecorder) hook(_ int, body []byte) *sqibssim.Fault {
	var p struct {
		Event struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Number int    `json:"build_number"`
		} `json:"event"`
	}
	_ = json.Unmarshal(body, &p) // an unreadable body shows up as an unknown id below
	k := fkey{p.Event.ID, p.Event.Number}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[k]++
	if kind, f := r.decide(k, r.attempts[k]); f != nil {
		r.faults[kind]++
		return f
	}
	r.processed++
	pos, known := r.pos[k]
	r.calls[k.id] = append(r.calls[k.id], fcall{
		number: k.number, failed: p.Event.Status == "FAILED",
		whileStopped: r.stopped, sentInTheStop: known && pos >= r.stopGate && r.stopped,
	})
	return nil
}

func (r *faultRecorder) decide(k fkey, attempt int) (string, *sqibssim.Fault) {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s#%d#%d", k.id, k.number, attempt)
	rng := rand.New(rand.NewPCG(r.seed, h.Sum64()))
	if rng.IntN(100) >= faultPercent {
		return "", nil
	}
	switch rng.IntN(4) {
	case 0:
		return "500", &sqibssim.Fault{Status: http.StatusInternalServerError}
	case 1:
		return "429", &sqibssim.Fault{Status: http.StatusTooManyRequests}
	case 2:
		return "hang", &sqibssim.Fault{Hang: true} // past SQIBS_TIMEOUT
	default:
		return "drop", &sqibssim.Fault{Drop: true}
	}
}

func (r *faultRecorder) setStopped(v bool) { r.mu.Lock(); r.stopped = v; r.mu.Unlock() }

// lastSeen reports whether every group's last build has been processed,
// and how many calls were processed in all.
func (r *faultRecorder) lastSeen(groups []*fgroup) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range groups {
		c, want := r.calls[g.id], g.delivered()
		if len(c) == 0 || c[len(c)-1].number != want[len(want)-1] {
			return false, r.processed
		}
	}
	return true, r.processed
}

// faultLogs counts the dispatcher's retries (one JSON log line per failed
// delivery) and keeps the tail of the logs for failure messages, without
// holding a soak run's megabytes of logs.
type faultLogs struct {
	mu       sync.Mutex
	retries  int
	maxDelay time.Duration // longest retry backoff
	tail     []byte
}

func (l *faultLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if bytes.Contains(p, []byte(`"msg":"SQIBS delivery failed: will retry"`)) {
		l.retries++ // slog's JSON handler writes each record in one Write
		var r struct {
			RetryIn int64 `json:"retry_in_ms"`
		}
		if json.Unmarshal(p, &r) == nil {
			l.maxDelay = max(l.maxDelay, time.Duration(r.RetryIn)*time.Millisecond)
		}
	}
	l.tail = append(l.tail, p...)
	if len(l.tail) > 64<<10 {
		l.tail = append([]byte(nil), l.tail[len(l.tail)-32<<10:]...)
	}
	return len(p), nil
}

func (l *faultLogs) counts() (retries int, maxDelay time.Duration, tail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.retries, l.maxDelay, string(l.tail)
}

// TestFaultInjection sends SOAK_PIPELINES × SOAK_BUILDS build webhooks
// (10% of them delivered twice) from several concurrent senders, through an
// SQIBS that fails about 30% of the calls (500, 429, a hang past
// SQIBS_TIMEOUT, a dropped connection) and a dispatcher stopped and
// restarted midway, with the retry policy as deployed (backoff, MAX_BACKOFF,
// RETRY_FOR and the in-process queue's redrive at the template's 1000
// receives) run SOAK_TIME_SCALE times as fast. It checks that nothing is
// lost, dead-lettered or delivered twice, that every incident saw its builds
// in order, was created once per failure streak and ends as its last build
// says.
func TestFaultInjection(t *testing.T) {
	pipelines := soakInt(t, "SOAK_PIPELINES", defaultFaultPipelines)
	builds := soakInt(t, "SOAK_BUILDS", defaultFaultBuilds)
	scale := defaultTimeScale
	if v := os.Getenv("SOAK_TIME_SCALE"); v != "" {
		var err error
		if scale, err = strconv.ParseFloat(v, 64); err != nil || scale <= 0 || scale > 1 {
			t.Fatalf("SOAK_TIME_SCALE=%q: want a number in (0, 1]", v)
		}
	}
	n := pipelines * builds
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (replay the workload and fault plan with SOAK_SEED=%d SOAK_PIPELINES=%d SOAK_BUILDS=%d)", seed, seed, pipelines, builds)
	// The retry count is read from the logs: keep them at info.
	t.Setenv("AWS_LAMBDA_LOG_LEVEL", "")
	t.Setenv("LOG_LEVEL", "INFO")
	scaled := func(d time.Duration) time.Duration { return time.Duration(float64(d) * scale) }
	// make dev's 5 s, but never under a second: a call SQIBS processed must
	// not look failed to a loaded machine, or it is delivered twice.
	sqibsTimeout := max(scaled(5*time.Second), time.Second).Round(time.Millisecond)
	maxBackoff := scaled(dispatcher.DefaultMaxBackoff)

	groups, schedule := faultPlan(t, seed, pipelines, builds)
	// Schedule positions [stopGate, restartGate) are sent only while the
	// dispatcher is stopped; the stop itself is asked for at stopAt, while
	// senders are still busy.
	stopAt, stopGate, restartGate := n*4/10, n/2, n*3/4
	rec := &faultRecorder{seed: seed, stopGate: stopGate, pos: map[fkey]int{}, attempts: map[fkey]int{},
		calls: map[string][]fcall{}, faults: map[string]int{}}
	for _, b := range schedule {
		rec.pos[fkey{b.id, b.number}] = b.pos
	}

	logs := &faultLogs{}
	s, err := Start(context.Background(), Options{
		Env: config.Map(map[string]string{
			"DEV_ADDR": "127.0.0.1:0", "SQIBS_SIM_ADDR": "127.0.0.1:0", "BUILDKITE_SIM_ADDR": "127.0.0.1:0",
			"BUILDKITE_WEBHOOK_TOKEN": faultToken,
			"ALERT_BRANCHES":          "*",
			"SQIBS_TIMEOUT":           sqibsTimeout.String(),
		}),
		Stderr: logs,
		// The in-process queue as make dev has it (the template's
		// redrive policy, SQS's dedup window), but for the visibility
		// timeout, the template's 180 s on the run's clock.
		Queue: memqueue.Options{VisibilityTimeout: max(scaled(180*time.Second), 5*time.Second)},
		// The dispatcher's retry policy as deployed, on the run's clock.
		BackoffBase: scaled(time.Second),
		MaxBackoff:  maxBackoff,
		RetryFor:    scaled(dispatcher.DefaultRetryFor),
		DrainWait:   5 * time.Second,
		// The template's DispatcherMaxConcurrency default.
		Poller: poller.Options{Wait: 100 * time.Millisecond, Concurrency: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	s.Sim.SetFault(rec.hook)
	began := time.Now()

	// Senders: each owns some groups and sends their builds in schedule
	// order, one at a time and each only once the previous one was queued,
	// as Buildkite sends one pipeline's webhooks.
	var (
		sent        atomic.Int64 // builds sent (first deliveries)
		sends       atomic.Int64 // webhooks sent, duplicates included
		abort       = make(chan struct{})
		abortOnce   sync.Once
		errMu       sync.Mutex
		firstErr    error
		stopped     = make(chan struct{})
		restarted   = make(chan struct{})
		sendersDone sync.WaitGroup
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		abortOnce.Do(func() { close(abort) })
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: faultSenders}}
	defer client.CloseIdleConnections()
	post := func(b *fbuild) error {
		id, err := PostWebhook(client, s.ReceiverURL, faultToken, b.body)
		sends.Add(1)
		switch {
		case err != nil:
			return fmt.Errorf("%s #%d: %w", b.id, b.number, err)
		case b.msgID == "":
			b.msgID = id
		case id != b.msgID: // a duplicate must be recognised as one
			return fmt.Errorf("%s #%d sent twice was queued as %s and %s", b.id, b.number, b.msgID, id)
		}
		return nil
	}
	wait := func(gate chan struct{}) bool {
		select {
		case <-gate:
			return true
		case <-abort:
			return false
		}
	}
	for w := range faultSenders {
		sendersDone.Go(func() {
			later := map[int]*fbuild{} // group → duplicate to send after its next build
			for _, b := range schedule {
				if groups[b.group].sender != w {
					continue
				}
				if (b.pos >= stopGate && !wait(stopped)) || (b.pos >= restartGate && !wait(restarted)) {
					return
				}
				if err := post(b); err != nil {
					fail(err)
					return
				}
				sent.Add(1)
				if d := later[b.group]; d != nil {
					delete(later, b.group)
					if err := post(d); err != nil { // an old build again, after a newer one
						fail(err)
						return
					}
				}
				switch b.dup {
				case dupNow:
					if err := post(b); err != nil {
						fail(err)
						return
					}
				case dupLater:
					later[b.group] = b
				}
			}
		})
	}
	untilSent := func(k int) bool {
		for sent.Load() < int64(k) {
			select {
			case <-abort:
				return false
			case <-time.After(2 * time.Millisecond):
			}
		}
		return true
	}

	// Midway: stop the dispatcher while webhooks keep coming, then restart it.
	var pause time.Duration
	var queuedWhileStopped int
	func() {
		restartedOK := false
		defer func() {
			if !restartedOK { // release the senders waiting at a gate
				fail(errors.New("the stop and restart did not complete"))
			}
		}()
		if !untilSent(stopAt) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.StopDispatcher(ctx); err != nil {
			t.Errorf("StopDispatcher: %v", err)
			return
		}
		if s.DispatcherRunning() {
			t.Error("DispatcherRunning after StopDispatcher")
		}
		stoppedAt := time.Now()
		rec.setStopped(true)
		close(stopped)
		if !untilSent(restartGate) {
			return
		}
		// The receiver kept queueing, and nothing took what it queued:
		// every build first sent in the stop is still in the queue.
		queuedWhileStopped = restartGate - stopGate
		if st := s.Queue.Stats(); st.Visible+st.InFlight < queuedWhileStopped {
			t.Errorf("queue holds %+v while stopped, want at least the %d builds sent meanwhile", st, queuedWhileStopped)
		}
		rec.setStopped(false)
		pause = time.Since(stoppedAt)
		if err := s.StartDispatcher(); err != nil {
			t.Errorf("StartDispatcher: %v", err)
			return
		}
		close(restarted)
		restartedOK = true
	}()
	sendersDone.Wait()
	if firstErr != nil {
		t.Fatalf("sending: %v", firstErr)
	}
	if t.Failed() {
		t.FailNow()
	}
	sendTime := time.Since(began)

	// Quiescence: the queue is empty (nothing visible, delayed or in
	// flight) and every call SQIBS accepted has been processed. Nothing can
	// reach SQIBS after that, so a build not seen by then is lost, which
	// the checks below report.
	// A group's tail waits MAX_BACKOFF per failure at most; twenty in a
	// row do not happen.
	bound := time.Minute + 20*maxBackoff
	deadline := time.Now().Add(bound)
	for {
		st := s.Queue.Stats()
		_, processed := rec.lastSeen(groups)
		if st.Visible == 0 && st.InFlight == 0 && s.Sim.Calls() == processed {
			break
		}
		if time.Now().After(deadline) {
			_, _, tail := logs.counts()
			t.Fatalf("not quiescent after %s (seed %d): queue %+v, calls %d/%d\nlog tail:\n%s",
				bound, seed, st, s.Sim.Calls(), processed, tail)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if all, _ := rec.lastSeen(groups); !all {
		t.Errorf("the queue is empty but some group's last build never reached SQIBS (seed %d)", seed)
	}
	elapsed := time.Since(began)

	if d := s.Queue.DeadLetters(); len(d) != 0 {
		t.Errorf("%d dead letters (nothing here is permanent), first: %s %s", len(d), d[0].Reason, d[0].Message.Body)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	byID := map[string][]sqibssim.Incident{}
	for _, in := range s.Sim.Incidents() {
		byID[in.ID] = append(byID[in.ID], in)
	}
	repeats, whileStopped := 0, 0
	for _, g := range groups {
		calls := rec.calls[g.id]
		for _, c := range calls {
			if c.sentInTheStop {
				t.Errorf("%s #%d, first sent while the dispatcher was stopped, reached SQIBS before the restart", g.id, c.number)
			}
			if c.whileStopped {
				whileStopped++
			}
		}

		// Order and completeness. The group's messages are queued in send
		// order (each send waits for the previous one's 200, and a
		// duplicate is the same message), and the dispatcher takes the
		// next one only after SQIBS accepted the current one. A call SQIBS
		// processed can still be retried when its answer came too late for
		// SQIBS_TIMEOUT; a hang, a drop, a 500 or a 429 is not processed
		// at all. So the processed builds are exactly the sent builds, in
		// order, each possibly repeated right after itself; but for the
		// passes the incident state holds back: a pass after a pass.
		var got []int
		for _, c := range calls {
			got = append(got, c.number)
		}
		want := g.delivered()
		if uniq := slices.Compact(slices.Clone(got)); !slices.Equal(uniq, want) {
			t.Errorf("%s: SQIBS processed builds %v, sent %v", g.id, got, want)
			continue
		}
		repeats += len(got) - len(want)

		// Incident records. The simulator opens a record on a trigger when
		// none is open for the id, counts later triggers on it, and closes
		// it on a resolve: replaying the processed calls gives exactly its
		// records. Since repeats are of the same event, back to back, they
		// change no open/closed transition: the number of records is the
		// number of open periods of the sent sequence (no incident created
		// twice, none missing), and a record's Triggers is its period's
		// failed builds plus the repeated calls among them.
		var model []sqibssim.Incident
		open := -1
		for _, c := range calls {
			switch {
			case c.failed && open < 0:
				model = append(model, sqibssim.Incident{ID: g.id, Status: sqibssim.StatusOpen, Triggers: 1})
				open = len(model) - 1
			case c.failed:
				model[open].Triggers++
			case open >= 0:
				model[open].Status = sqibssim.StatusResolved
				open = -1
			}
		}
		periods, failedIn := 0, []int(nil)
		for i, b := range g.builds {
			if b.failed && (i == 0 || !g.builds[i-1].failed) {
				periods++
				failedIn = append(failedIn, 0)
			}
			if b.failed {
				failedIn[periods-1]++
			}
		}
		have := byID[g.id]
		delete(byID, g.id)
		if len(have) != periods || len(model) != periods {
			t.Errorf("%s: %d incident records (%d from the calls processed), want one per open period of the builds sent: %d",
				g.id, len(have), len(model), periods)
			continue
		}
		for i, in := range have {
			if in.Status != model[i].Status || in.Triggers != model[i].Triggers {
				t.Errorf("%s record %d: %s with %d triggers, the calls processed give %s with %d",
					g.id, i, in.Status, in.Triggers, model[i].Status, model[i].Triggers)
			}
			if in.Triggers < failedIn[i] {
				t.Errorf("%s record %d: %d triggers for %d failed builds", g.id, i, in.Triggers, failedIn[i])
			}
		}

		// The end state is the last build's.
		last := g.builds[len(g.builds)-1]
		if _, isOpen := s.Sim.Open(g.id); isOpen != last.failed {
			t.Errorf("%s: open=%v, but its last build #%d failed=%v", g.id, isOpen, last.number, last.failed)
		}
	}
	for id, in := range byID {
		t.Errorf("incident %q (%d records) matches no group", id, len(in))
	}

	// Every injected fault fails its call before SQIBS processes it, so a
	// processed call is never retried: a repeat is an event delivered twice.
	retries, maxDelay, _ := logs.counts()
	injected := 0
	for _, k := range []string{"500", "429", "hang", "drop"} {
		injected += rec.faults[k]
		if rec.faults[k] == 0 {
			t.Errorf("no %s fault was injected: the run proves less than it claims", k)
		}
	}
	if repeats != 0 {
		t.Errorf("%d events delivered twice (seed %d)", repeats, seed)
	}
	if retries < injected {
		t.Errorf("%d retries logged for %d injected faults", retries, injected)
	}
	if maxDelay > maxBackoff {
		t.Errorf("a retry waited %s, longer than MAX_BACKOFF (%s on this run's clock)", maxDelay, maxBackoff)
	}
	if queuedWhileStopped == 0 {
		t.Error("no build was sent while the dispatcher was stopped")
	}
	t.Logf("seed %d: %d builds in %d groups, %d webhooks sent (%d duplicates) in %s; %d SQIBS calls processed, "+
		"%d repeats; faults %v (%d); %d retries logged, longest backoff %s (%s real-world); dispatcher stopped %s with %d builds queued meanwhile, %d stale calls processed in the stop; quiescent after %s (time scale %g)",
		seed, n, len(groups), sends.Load(), sends.Load()-int64(n), sendTime.Round(time.Millisecond), rec.processed,
		repeats, rec.faults, injected, retries, maxDelay.Round(time.Millisecond), time.Duration(float64(maxDelay)/scale).Round(time.Second),
		pause.Round(time.Millisecond), queuedWhileStopped, whileStopped, elapsed.Round(time.Millisecond), scale)
}

// soakInt reads a positive whole number from the environment.
func soakInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 2 {
		t.Fatalf("%s=%q: want a whole number of at least 2", name, v)
	}
	return n
}

// StopDispatcher holds what is queued; StartDispatcher delivers it.
func TestStopStartDispatcher(t *testing.T) {
	h := start(t, map[string]string{"BUILDKITE_WEBHOOK_TOKEN": "e2e-token"}, "e2e-token")
	ctx := context.Background()
	if !h.s.DispatcherRunning() {
		t.Fatal("not running after Start")
	}
	if err := h.s.StartDispatcher(); err != nil { // a no-op while running
		t.Fatal(err)
	}
	for range 2 { // stopping twice is fine
		if err := h.s.StopDispatcher(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if h.s.DispatcherRunning() {
		t.Fatal("running after StopDispatcher")
	}
	for i := range 3 {
		h.mustQueue(payload(t, "build_finished_failed.json", 100+i, "failed", "main"))
	}
	// Three long-poll waits (200 ms here) pass: a poller still running
	// would have taken them.
	time.Sleep(600 * time.Millisecond)
	if st := h.s.Queue.Stats(); st.Visible != 3 || st.InFlight != 0 {
		t.Fatalf("stopped dispatcher: queue %+v, want 3 visible", st)
	}
	if c := h.s.Sim.Calls(); c != 0 {
		t.Fatalf("stopped dispatcher: %d SQIBS calls", c)
	}
	if err := h.s.StartDispatcher(); err != nil {
		t.Fatal(err)
	}
	h.wait("three calls after the restart", func(s *sqibssim.Server) bool { return s.Calls() == 3 })
	if in := h.s.Sim.Incidents(); len(in) != 1 || in[0].Triggers != 3 {
		t.Errorf("incidents %+v, want one with 3 triggers", in)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := h.s.StartDispatcher(); err == nil || errors.Is(err, ErrStopping) {
		t.Errorf("StartDispatcher after Shutdown: %v, want the shut-down error", err)
	}
}
