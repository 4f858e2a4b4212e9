package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// fixture is the 5 KB build.finished payload every webhook is made from.
const fixture = "internal/buildkite/testdata/build_finished_large.json"

// Spread of the generated builds: pipelines × branches incident ids, so
// message groups (one per incident) run in parallel as they would in use.
const (
	pipelines   = 10
	branches    = 10
	groups      = pipelines * branches
	firstNumber = 100_000 // build number of webhook 0; numbers identify webhooks
)

// webhooks makes distinct build.finished payloads from the fixture:
// webhook i has its own build id and number, pipeline svc-<i%100/10> (with
// an id of its own: the incident state follows renamed pipelines by it), branch
// br-<i%10>, and a state that alternates per incident (failed, passed,
// failed, ...) so incidents open and resolve.
type webhooks struct {
	mu   sync.Mutex
	tmpl map[string]any
}

func loadWebhooks(root string) (*webhooks, error) {
	b, err := os.ReadFile(filepath.Join(root, fixture))
	if err != nil {
		return nil, fmt.Errorf("webhook fixture: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("webhook fixture %s: %w", fixture, err)
	}
	if _, ok := m["build"].(map[string]any); !ok {
		return nil, fmt.Errorf("webhook fixture %s: no build object", fixture)
	}
	if _, ok := m["pipeline"].(map[string]any); !ok {
		return nil, fmt.Errorf("webhook fixture %s: no pipeline object", fixture)
	}
	return &webhooks{tmpl: m}, nil
}

// webhookSpec is what makes webhook i distinct.
type webhookSpec struct {
	Number   int
	State    string
	Pipeline string
	Branch   string
}

func specOf(i int) webhookSpec {
	state := "failed"
	if (i/groups)%2 == 1 {
		state = "passed"
	}
	return webhookSpec{
		Number:   firstNumber + i,
		State:    state,
		Pipeline: fmt.Sprintf("svc-%02d", i%groups/branches),
		Branch:   fmt.Sprintf("br-%02d", i%branches),
	}
}

// body is webhook i's JSON body.
func (w *webhooks) body(i int) []byte {
	s := specOf(i)
	w.mu.Lock()
	defer w.mu.Unlock()
	build := w.tmpl["build"].(map[string]any)
	pipeline := w.tmpl["pipeline"].(map[string]any)
	build["id"] = fmt.Sprintf("0191225a-2f1c-7b6e-9d0a-%012d", s.Number)
	build["number"] = s.Number
	build["state"] = s.State
	build["branch"] = s.Branch
	build["web_url"] = "https://buildkite.com/acme/" + s.Pipeline + "/builds/" + strconv.Itoa(s.Number)
	pipeline["slug"] = s.Pipeline
	pipeline["id"] = "0191225a-0000-7000-8000-0000000000" + s.Pipeline[len(s.Pipeline)-2:] // one per pipeline, as in Buildkite
	pipeline["web_url"] = "https://buildkite.com/acme/" + s.Pipeline
	b, err := json.Marshal(w.tmpl)
	if err != nil {
		panic(err) // a map decoded from JSON always encodes
	}
	return b
}

// buildNumberOf reads event.build_number from an SQIBS request body; 0 when absent.
func buildNumberOf(body []byte) int {
	var p struct {
		Event struct {
			BuildNumber int `json:"build_number"`
		} `json:"event"`
	}
	_ = json.Unmarshal(body, &p)
	return p.Event.BuildNumber
}
