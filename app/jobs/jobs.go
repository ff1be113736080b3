// Package jobs runs invigil's scheduled work with gocron: disconnect
// detection and the purge of old hook receipts. Each job is a plain
// function, so tests call it directly with a moved clock.
package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
)

// Job is one scheduled task.
type Job struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// Scheduler runs jobs until Shutdown.
type Scheduler struct{ s gocron.Scheduler }

// Start schedules every job; a job never overlaps itself.
func Start(clock clockwork.Clock, log *slog.Logger, list ...Job) (*Scheduler, error) {
	s, err := gocron.NewScheduler(gocron.WithClock(clock), gocron.WithLogger(gocronLogger{log}))
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	for _, j := range list {
		task := gocron.NewTask(func(j Job) {
			ctx, cancel := context.WithTimeout(context.Background(), j.Every*4)
			defer cancel()
			if err := j.Run(ctx); err != nil {
				log.Error("job failed", "job", j.Name, "err", err)
			}
		}, j)
		_, err := s.NewJob(gocron.DurationJob(j.Every), task,
			gocron.WithName(j.Name), gocron.WithSingletonMode(gocron.LimitModeReschedule))
		if err != nil {
			return nil, fmt.Errorf("jobs: schedule %s: %w", j.Name, err)
		}
	}
	s.Start()
	return &Scheduler{s: s}, nil
}

// Shutdown stops scheduling and waits for running jobs.
func (s *Scheduler) Shutdown() error { return s.s.Shutdown() }

type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug(msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug(msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn(msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error(msg, args...) }
