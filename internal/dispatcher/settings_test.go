package dispatcher

import (
	"strings"
	"testing"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/config"
)

func TestLoadSettings(t *testing.T) {
	r := config.NewReader(config.Map(map[string]string{"SQIBS_URL": "https://x/v1/process", "SQIBS_FROM": ""}))
	d := LoadSettings(r)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if d.SQIBS.From != "" || d.SQIBS.Auth != "header" || d.SQIBS.Timeout.String() != "5s" || d.SecretTTL.String() != "5m0s" {
		t.Errorf("%+v", d)
	}
	r = config.NewReader(config.Map(map[string]string{"SQIBS_URL": "https://x", "SQIBS_AUTH": "basic"}))
	LoadSettings(r)
	if r.Err() == nil || !strings.Contains(r.Err().Error(), "SQIBS_AUTH") {
		t.Errorf("bad SQIBS_AUTH: %v", r.Err())
	}
	r = config.NewReader(config.Map(nil))
	if LoadSettings(r); r.Err() == nil || !strings.Contains(r.Err().Error(), "SQIBS_URL") {
		t.Errorf("missing SQIBS_URL: %v", r.Err())
	}
	if d := LoadSettings(config.NewReader(config.Map(map[string]string{"SQIBS_URL": "u"}))); d.SQIBS.From != "Buildkite" || d.StateTable != "" {
		t.Errorf("default from = %q, state table %q", d.SQIBS.From, d.StateTable)
	}
	d = LoadSettings(config.NewReader(config.Map(map[string]string{"SQIBS_URL": "u", "STATE_TABLE": " bridge-incidents ", "ALERT_AFTER_FAILURES": "3"})))
	if d.StateTable != "bridge-incidents" || d.Handler.Rules.AlertAfterFailures != 3 {
		t.Errorf("STATE_TABLE %q, ALERT_AFTER_FAILURES %d", d.StateTable, d.Handler.Rules.AlertAfterFailures)
	}
}

// The reserve covers the worst delivery: token fetch, request, refetch of a
// refused token, retried request (2 s fetches), then a second to report.
func TestReserveIsTheDeliveryBudget(t *testing.T) {
	for _, tc := range []struct {
		timeout string
		want    time.Duration
	}{
		{"", 15 * time.Second}, // 2 + 5 + 2 + 5 + 1
		{"1s", 7 * time.Second},
		{"10s", 25 * time.Second},
	} {
		env := map[string]string{"SQIBS_URL": "https://x/v1/process"}
		if tc.timeout != "" {
			env["SQIBS_TIMEOUT"] = tc.timeout
		}
		if got := LoadSettings(config.NewReader(config.Map(env))).Handler.Reserve; got != tc.want {
			t.Errorf("SQIBS_TIMEOUT %q: Reserve = %s, want %s", tc.timeout, got, tc.want)
		}
	}
	// With a Buildkite API token, the parent lookup and the failed jobs
	// (1 s each) are counted in; without one nothing changes.
	for _, tc := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{map[string]string{"BUILDKITE_API_TOKEN": "bkua_x"}, 17 * time.Second},
		{map[string]string{"BUILDKITE_API_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x", "SQIBS_TIMEOUT": "10s"}, 27 * time.Second},
		{map[string]string{"BUILDKITE_API_TOKEN": " ", "BUILDKITE_API_URL": "not read without a token"}, 15 * time.Second},
	} {
		tc.env["SQIBS_URL"] = "https://x/v1/process"
		r := config.NewReader(config.Map(tc.env))
		d := LoadSettings(r)
		if r.Err() != nil || d.Handler.Reserve != tc.want || d.Handler.Rules.TriggeredByParent != (tc.want != 15*time.Second) {
			t.Errorf("%v: Reserve = %s (err %v, triggered by parent %v), want %s", tc.env, d.Handler.Reserve, r.Err(), d.Handler.Rules.TriggeredByParent, tc.want)
		}
	}
	if got := New(Config{}, nil, nil, nil, nil, nil).cfg.Reserve; got != 15*time.Second {
		t.Errorf("New's default Reserve = %s, want the budget of the default SQIBS_TIMEOUT, 15s", got)
	}
}
