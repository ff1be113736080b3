// Package jobs runs invigil's scheduled work with gocron. Each job is a
// plain function, so tests call it directly with a moved clock; a job never
// overlaps itself (a run that comes due while the last still runs is
// skipped), and one that fails or panics is logged and counted without
// stopping the others. Every run is recorded in jobs_meta (last run, its
// duration, rows touched, last error), which GET /api/admin/jobs shows.
package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"

	"invigil/app/metrics"
	"invigil/store"
)

// Job is one scheduled task. Run reports how many rows it touched.
type Job struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) (int, error)
}

// Options are what the scheduler needs.
type Options struct {
	Clock   clockwork.Clock
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	DB      *store.DB // where runs are recorded (jobs_meta); nil: nowhere
	// AfterRun, when set, hears of every finished run, after it is
	// recorded (tests wait on it instead of sleeping).
	AfterRun func(Run)
}

// Run is one finished run.
type Run struct {
	Name string
	Rows int
	Err  error
}

// Scheduler runs jobs until Shutdown.
type Scheduler struct{ s gocron.Scheduler }

// Start records the jobs in jobs_meta and schedules each to run every
// Every, the first time Every after now.
func Start(o Options, list ...Job) (*Scheduler, error) {
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.DB != nil {
		every := map[string]time.Duration{}
		for _, j := range list {
			every[j.Name] = j.Every
		}
		err := o.DB.Update(context.Background(), func(tx *store.Tx) error { return tx.RegisterJobs(every) })
		if err != nil {
			return nil, fmt.Errorf("jobs: %w", err)
		}
	}
	s, err := gocron.NewScheduler(gocron.WithClock(o.Clock), gocron.WithLogger(gocronLogger{o.Logger}))
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	for _, j := range list {
		// Our own guard rather than gocron's singleton mode: gocron frees
		// its slot only after the task returned, so a run that comes due
		// just after AfterRun could be skipped; this one is free before.
		running := new(atomic.Bool)
		lastStart := new(atomic.Int64)
		task := gocron.NewTask(func(j Job) {
			// gocron can fire a duration job a second time at once: when a
			// fast run's completion is handled before its rescheduling, it
			// schedules from the job's start and lands on "now". A run within
			// half a period of the last start is that echo.
			now := o.Clock.Now().UnixNano()
			if last := lastStart.Load(); last != 0 && now-last < int64(j.Every/2) {
				o.Logger.Debug("job ran moments ago: this run is skipped", "job", j.Name)
				return
			}
			if !running.CompareAndSwap(false, true) {
				o.Logger.Debug("job still running: this run is skipped", "job", j.Name)
				return
			}
			lastStart.Store(now)
			defer running.Store(false) // whatever happens below
			runOnce(o, j, func() { running.Store(false) })
		}, j)
		_, err := s.NewJob(gocron.DurationJob(j.Every), task, gocron.WithName(j.Name))
		if err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("jobs: schedule %s: %w", j.Name, err)
		}
	}
	s.Start()
	return &Scheduler{s: s}, nil
}

// runOnce runs a job with a deadline, containing a panic, then counts and
// records the run. The record is written on a context of its own: a run
// that used up its deadline is recorded too.
func runOnce(o Options, j Job, done func()) {
	started, began := o.Clock.Now(), time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline(j.Every))
	defer cancel()
	n, err := func() (n int, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
				o.Logger.Error("job panicked", "job", j.Name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		return j.Run(ctx)
	}()
	took := time.Since(began)
	o.Metrics.JobRuns.WithLabelValues(j.Name).Inc()
	o.Metrics.JobDuration.WithLabelValues(j.Name).Observe(took.Seconds())
	if err != nil {
		o.Metrics.JobErrors.WithLabelValues(j.Name).Inc()
		o.Logger.Error("job failed", "job", j.Name, "err", err)
	} else if n > 0 {
		o.Logger.Info("job done", "job", j.Name, "rows", n)
	}
	if o.DB != nil {
		r := store.JobRun{Name: j.Name, Started: started, Finished: started.Add(took), Rows: n}
		if err != nil {
			r.Err = err.Error()
		}
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if werr := o.DB.Update(rctx, func(tx *store.Tx) error { return tx.RecordJobRun(r) }); werr != nil {
			o.Logger.Warn("job run not recorded", "job", j.Name, "err", werr)
		}
	}
	done()
	if o.AfterRun != nil {
		o.AfterRun(Run{Name: j.Name, Rows: n, Err: err})
	}
}

// Deadline is how long one run of a job scheduled every d may take.
func Deadline(every time.Duration) time.Duration { return max(every*4, 30*time.Second) }

// Shutdown stops scheduling and waits for running jobs.
func (s *Scheduler) Shutdown() error { return s.s.Shutdown() }

type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug(msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Debug(msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn(msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error(msg, args...) }
