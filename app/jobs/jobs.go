// Package jobs runs invigil's scheduled work with gocron. Each job is a
// plain function, so tests call it directly with a moved clock; a job never
// overlaps itself, and one that fails or panics is logged and counted
// without stopping the others.
package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"

	"invigil/app/metrics"
)

// Job is one scheduled task. Run reports how many rows it touched.
type Job struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) (int, error)
}

// Scheduler runs jobs until Shutdown.
type Scheduler struct{ s gocron.Scheduler }

// Start schedules every job.
func Start(clock clockwork.Clock, log *slog.Logger, m *metrics.Metrics, list ...Job) (*Scheduler, error) {
	s, err := gocron.NewScheduler(gocron.WithClock(clock), gocron.WithLogger(gocronLogger{log}))
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	for _, j := range list {
		task := gocron.NewTask(func(j Job) { runOnce(clock, log, m, j) }, j)
		_, err := s.NewJob(gocron.DurationJob(j.Every), task,
			gocron.WithName(j.Name), gocron.WithSingletonMode(gocron.LimitModeReschedule))
		if err != nil {
			return nil, fmt.Errorf("jobs: schedule %s: %w", j.Name, err)
		}
	}
	s.Start()
	return &Scheduler{s: s}, nil
}

// runOnce runs a job with a deadline, counting it and containing a panic.
func runOnce(clock clockwork.Clock, log *slog.Logger, m *metrics.Metrics, j Job) {
	started := clock.Now()
	ctx, cancel := context.WithTimeout(context.Background(), max(j.Every*4, 30*time.Second))
	defer cancel()
	n, err := func() (n int, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
				log.Error("job panicked", "job", j.Name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		return j.Run(ctx)
	}()
	m.JobRuns.WithLabelValues(j.Name).Inc()
	m.JobDuration.WithLabelValues(j.Name).Observe(clock.Since(started).Seconds())
	if err != nil {
		m.JobErrors.WithLabelValues(j.Name).Inc()
		log.Error("job failed", "job", j.Name, "err", err)
		return
	}
	if n > 0 {
		log.Info("job done", "job", j.Name, "rows", n)
	}
}

// Shutdown stops scheduling and waits for running jobs.
func (s *Scheduler) Shutdown() error { return s.s.Shutdown() }

type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug(msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug(msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn(msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error(msg, args...) }
