package reconciler

import (
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/config"
)

// Settings is the reconciler function's part of DESIGN §2, read once at
// start. The API token and BUILDKITE_API_URL are read by
// buildkiteapi.FromEnv.
type Settings struct {
	StateTable string // STATE_TABLE: where the open incidents are
	QueueURL   string // QUEUE_URL: the FIFO queue the resolves go to
	SecretTTL  time.Duration
}

// LoadSettings reads the settings; check r.Err() after.
func LoadSettings(r *config.Reader) Settings {
	return Settings{
		StateTable: r.Required("STATE_TABLE"),
		QueueURL:   r.Required("QUEUE_URL"),
		SecretTTL:  r.Duration("SECRET_TTL", 5*time.Minute),
	}
}
