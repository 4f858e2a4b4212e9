// Command devserver runs the whole bridge on one machine (make dev): the
// receiver on DEV_ADDR, an in-process FIFO queue (or SQS with QUEUE_URL),
// the dispatcher, and an SQIBS simulator (or SQIBS_URL). See DESIGN §6 and
// the README's quick start. SIGINT/SIGTERM drain the queue and exit 0.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/local/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	restore := takeTerminal() // so Ctrl-C reaches this process, not make too
	defer restore()
	s, err := devstack.Start(ctx, devstack.Options{Env: os.LookupEnv, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		restore()
		app.Exit(app.NewLogger(os.Stderr), err)
	}
	<-ctx.Done()
	stop()
	s.Log.Info("shutting down: draining the queue")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		s.Log.Warn("shutdown", "error", err.Error())
	}
	s.Log.Info("stopped")
}
