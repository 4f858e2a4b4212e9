package devstack

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/callgoose/buildkite-sqibs/internal/local/memqueue"
	"github.com/callgoose/buildkite-sqibs/internal/local/sqibssim"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

// DeadLetters is the in-process queue's dead letters as the simulator
// shows them (GET /dead-letters, its page); nil with SQS.
func (s *Stack) DeadLetters() []sqibssim.DeadLetter {
	if s.Queue == nil {
		return nil
	}
	var out []sqibssim.DeadLetter
	for _, d := range s.Queue.DeadLetters() {
		out = append(out, deadLetterView(d))
	}
	return out
}

func deadLetterView(d memqueue.Dead) sqibssim.DeadLetter {
	v := sqibssim.DeadLetter{
		MessageID: d.Message.MessageId, Reason: d.Reason, At: d.At,
		IncidentID: d.Message.Attributes["MessageGroupId"],
	}
	v.Receives, _ = strconv.Atoi(d.Message.Attributes["ApproximateReceiveCount"])
	if env, err := queue.Decode([]byte(d.Message.Body)); err == nil { // an unreadable one is shown by id and reason
		v.Event = env.Event
		if env.Payload != nil && env.Payload.Build != nil {
			v.Build = env.Payload.Build.Number
		}
	}
	return v
}

// reportLeft logs each event the in-process queue still holds at exit, the
// drain having timed out or the dispatcher being stopped: it ends nowhere, so
// it is named here, and counted on Stdout next to the dead letters.
func (s *Stack) reportLeft(left []events.SQSMessage) {
	if len(left) == 0 {
		return
	}
	for _, m := range left {
		s.Log.Error("shutdown: event left in the in-process queue, lost with the process",
			"message_id", m.MessageId, "incident_id", m.Attributes["MessageGroupId"])
	}
	fmt.Fprintf(s.stdout, "left in the queue: %d (not sent; they are lost with this process)\n", len(left))
}

// printDeadLetters tells on stdout, at shutdown, what never reached SQIBS:
// in `make dev` the dead letters live only in this process.
func printDeadLetters(w io.Writer, list []sqibssim.DeadLetter) {
	if len(list) == 0 {
		fmt.Fprintln(w, "dead letters: none")
		return
	}
	fmt.Fprintf(w, "dead letters: %d (events that reached no incident; they are lost with this process)\n", len(list))
	for _, d := range list {
		what := d.Event
		if d.Build != 0 {
			what += " #" + strconv.FormatInt(d.Build, 10)
		}
		if what == "" {
			what = "-"
		}
		fmt.Fprintf(w, "  %s  %s  %s  %s  receives=%d  message_id=%s\n",
			d.At.UTC().Format(time.RFC3339), d.Reason, orDash(d.IncidentID), what, d.Receives, d.MessageID)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
