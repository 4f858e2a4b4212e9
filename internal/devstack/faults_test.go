package devstack

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/poller"
	"github.com/callgoose/buildkite-sqibs/internal/sqibssim"
)

// The fault-injection run (issue "Proof", part 2). `make test` runs it with
// defaultFaultBuilds; `make soak` with SOAK_WEBHOOKS (builds) set higher.
// SOAK_SEED replays a run's workload and fault plan; the seed is logged at
// the start of every run (go test shows it when the test fails, -v always).
const (
	defaultFaultBuilds = 300
	faultPipelines     = 6
	faultSenders       = 4
	faultPercent       = 30 // of SQIBS calls, spread evenly over the four faults
	dupPercent         = 10 // of builds, delivered twice
	faultSQIBSTimeout  = 200 * time.Millisecond
	faultToken         = "fault-token"
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

// faultPlan builds the workload from seed: n builds over
// faultPipelines × len(faultBranches) groups, each group a random sequence
// of failed and passed builds with increasing numbers, and a global
// schedule that interleaves the groups at random while keeping each
// group's own order.
func faultPlan(t *testing.T, seed uint64, n int) ([]*fgroup, []*fbuild) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	tmpl := map[bool][]byte{}
	for failed, file := range map[bool]string{true: "build_finished_failed.json", false: "build_finished_passed.json"} {
		b, err := os.ReadFile(filepath.Join("..", "buildkite", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		tmpl[failed] = b
	}
	var groups []*fgroup
	for p := range faultPipelines {
		for _, br := range faultBranches {
			groups = append(groups, &fgroup{id: fmt.Sprintf("acme/service-%d/%s", p, br)})
		}
	}
	// Senders own groups at random, so each sends for several pipelines and branches.
	for i, gi := range rng.Perm(len(groups)) {
		groups[gi].sender = i % faultSenders
	}
	slots := make([]int, 0, n) // group index per schedule position
	for i := range n {
		slots = append(slots, i%len(groups))
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
	var m map[string]any
	if err := json.Unmarshal(fixture, &m); err != nil {
		t.Fatal(err)
	}
	build, pipeline := m["build"].(map[string]any), m["pipeline"].(map[string]any)
	state := "passed"
	if b.failed {
		state = "failed"
	}
	build["number"], build["state"], build["branch"] = b.number, state, parts[2]
	build["id"] = fmt.Sprintf("%s#%d", id, b.number) // the dedup identity: one per build
	build["web_url"] = fmt.Sprintf("https://buildkite.com/acme/%s/builds/%d", parts[1], b.number)
	build["url"] = fmt.Sprintf("https://api.buildkite.com/v2/organizations/acme/pipelines/%s/builds/%d", parts[1], b.number)
	pipeline["slug"], pipeline["name"] = parts[1], parts[1]
	pipeline["id"] = "pipeline-" + parts[1] // one id per pipeline, as in Buildkite: the state follows renames by it
	pipeline["web_url"] = "https://buildkite.com/acme/" + parts[1]
	pipeline["url"] = "https://api.buildkite.com/v2/organizations/acme/pipelines/" + parts[1]
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
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
			RetryIn time.Duration `json:"retry_in"`
		}
		if json.Unmarshal(p, &r) == nil {
			l.maxDelay = max(l.maxDelay, r.RetryIn)
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

// signedPost sends body as Buildkite does and returns the queued message id.
func signedPost(c *http.Client, url string, body []byte) (string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(faultToken))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Buildkite-Event", "build.finished")
	req.Header.Set("X-Buildkite-Signature", "timestamp="+ts+",signature="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ Status, ID string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || out.Status != "queued" || out.ID == "" {
		return "", fmt.Errorf("receiver answered %d %s", resp.StatusCode, b)
	}
	return out.ID, nil
}

// TestFaultInjection sends a few hundred webhooks (SOAK_WEBHOOKS builds,
// plus duplicates) from several concurrent senders, through an SQIBS that
// fails about 30% of the calls (500, 429, a hang past SQIBS_TIMEOUT, a
// dropped connection) and a dispatcher stopped and restarted midway, and
// checks that every incident ends as its last build says, was never
// created twice, and saw its builds in order, with nothing lost or
// dead-lettered.
func TestFaultInjection(t *testing.T) {
	n := defaultFaultBuilds
	if v := os.Getenv("SOAK_WEBHOOKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("SOAK_WEBHOOKS=%q: want a number of at least 100", v)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (replay the workload and fault plan with SOAK_SEED=%d SOAK_WEBHOOKS=%d)", seed, seed, n)
	// The retry count is read from the logs: keep them at info.
	t.Setenv("AWS_LAMBDA_LOG_LEVEL", "")
	t.Setenv("LOG_LEVEL", "INFO")

	groups, schedule := faultPlan(t, seed, n)
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
			"DEV_ADDR": "127.0.0.1:0", "SQIBS_SIM_ADDR": "127.0.0.1:0",
			"BUILDKITE_WEBHOOK_TOKEN": faultToken,
			"ALERT_BRANCHES":          "*",
			"SQIBS_TIMEOUT":           faultSQIBSTimeout.String(),
		}),
		Stderr: logs,
		Queue: memqueue.Options{
			// Far above the longest batch (two rounds of SQIBS_TIMEOUT at
			// most): a batch that outlived it would have its processed but
			// not yet deleted messages delivered again after later ones, a
			// reordering SQS allows too, which is why AWS wants the
			// visibility timeout at six times the function's timeout.
			VisibilityTimeout: 5 * time.Second,
			// With 30% of calls failing, a message is received about five
			// times (its own failures and those of the messages before it
			// in its batches), fifteen in a soak run's tail; 50 do not
			// happen, so nothing may reach the dead letters.
			MaxReceives: 50,
			// Every duplicate must fall in the dedup window however long a
			// soak run takes: one outside it is a new message to SQS too.
			DedupWindow: time.Hour,
		},
		// The backoff is 2^receives units, and a message's receives count
		// every time it was held back behind a failed one of its group
		// (SQS counts them too): ten are common and fifteen happen in a
		// soak run, so the unit is short and the cap is production's
		// (900 units) on the same scale.
		BackoffBase: 2 * time.Millisecond,
		MaxBackoff:  900 * 2 * time.Millisecond,
		DrainWait:   5 * time.Second,
		// Lambda scales a FIFO source up with its active groups; two
		// loops would make hangs, not the bridge, the bottleneck.
		Poller: poller.Options{Wait: 100 * time.Millisecond, Concurrency: 6},
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
		id, err := signedPost(client, s.ReceiverURL, b.body)
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
	bound := time.Minute + time.Duration(n)*30*time.Millisecond
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

	// Every repeat is a processed call whose answer the dispatcher did not
	// get, so it logged a retry; so did every injected fault (one call
	// each: a 500, 429 or dropped connection fails the call, a hang
	// outlives SQIBS_TIMEOUT).
	retries, maxDelay, _ := logs.counts()
	injected := 0
	for _, k := range []string{"500", "429", "hang", "drop"} {
		injected += rec.faults[k]
		if rec.faults[k] == 0 {
			t.Errorf("no %s fault was injected: the run proves less than it claims", k)
		}
	}
	if repeats > retries-injected {
		t.Errorf("%d repeated calls, but only %d retries beyond the %d injected faults", repeats, retries-injected, injected)
	}
	if queuedWhileStopped == 0 {
		t.Error("no build was sent while the dispatcher was stopped")
	}
	t.Logf("seed %d: %d builds in %d groups, %d webhooks sent (%d duplicates) in %s; %d SQIBS calls processed, "+
		"%d repeats; faults %v (%d); %d retries logged, longest backoff %s; dispatcher stopped %s with %d builds queued meanwhile, %d stale calls processed in the stop; quiescent after %s",
		seed, n, len(groups), sends.Load(), sends.Load()-int64(n), sendTime.Round(time.Millisecond), rec.processed,
		repeats, rec.faults, injected, retries, maxDelay.Round(time.Millisecond), pause.Round(time.Millisecond), queuedWhileStopped, whileStopped, elapsed.Round(time.Millisecond))
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
