package dispatcher

import (
	"strings"
	"testing"

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
	if d := LoadSettings(config.NewReader(config.Map(map[string]string{"SQIBS_URL": "u"}))); d.SQIBS.From != "Buildkite" {
		t.Errorf("default from = %q", d.SQIBS.From)
	}
}
