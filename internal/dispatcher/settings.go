package dispatcher

import (
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/incident"
	"github.com/callgoose/buildkite-sqibs/internal/sqibs"
)

// Settings is the dispatcher's part of DESIGN §2, read once at start.
type Settings struct {
	SQIBS     sqibs.Config
	SecretTTL time.Duration
	DLQURL    string
	Handler   Config
}

// LoadSettings reads the dispatcher settings; check r.Err() after.
func LoadSettings(r *config.Reader) Settings {
	timeout := r.Duration("SQIBS_TIMEOUT", 5*time.Second)
	return Settings{
		SQIBS: sqibs.Config{
			URL:     r.Required("SQIBS_URL"),
			Auth:    sqibs.Auth(r.OneOf("SQIBS_AUTH", "header", "header", "query")),
			From:    r.Optional("SQIBS_FROM", "Buildkite"),
			Timeout: timeout,
		},
		SecretTTL: r.Duration("SECRET_TTL", 5*time.Minute),
		DLQURL:    r.String("DLQ_URL", ""),
		Handler: Config{
			Rules: incident.LoadRules(r),
			// One delivery can take two requests (a refused token is
			// refetched once): never start one that cannot finish.
			Reserve: 2*timeout + time.Second,
		},
	}
}
