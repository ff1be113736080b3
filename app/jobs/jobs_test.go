package jobs_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/jobs"
	"invigil/app/metrics"
	"invigil/store"
	"invigil/store/storetest"
)

// rig runs jobs on gocron with a fake clock; runs reports each finished run.
type rig struct {
	t     *testing.T
	clock *clockwork.FakeClock
	db    *store.DB
	m     *metrics.Metrics
	runs  chan jobs.Run
}

func start(t *testing.T, list ...jobs.Job) *rig {
	t.Helper()
	r := &rig{t: t, clock: clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)),
		m: metrics.New(), runs: make(chan jobs.Run, 100)}
	r.db = storetest.MustOpen(t, r.clock)
	s, err := jobs.Start(jobs.Options{Clock: r.clock, DB: r.db, Metrics: r.m,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		AfterRun: func(run jobs.Run) { r.runs <- run }}, list...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	return r
}

// tick waits until gocron armed n timers, then moves the clock.
func (r *rig) tick(n int, d time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.clock.BlockUntilContext(ctx, n); err != nil {
		r.t.Fatalf("gocron never armed %d timers", n)
	}
	r.clock.Advance(d)
}

// finished waits for n runs and returns them by job.
func (r *rig) finished(n int) map[string][]jobs.Run {
	r.t.Helper()
	out := map[string][]jobs.Run{}
	for range n {
		select {
		case run := <-r.runs:
			out[run.Name] = append(out[run.Name], run)
		case <-time.After(5 * time.Second):
			r.t.Fatalf("runs finished: %v, want %d", out, n)
		}
	}
	return out
}

func (r *rig) meta(name string) store.JobMeta {
	r.t.Helper()
	all, err := r.db.JobsMeta(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, m := range all {
		if m.Name == name {
			return m
		}
	}
	r.t.Fatalf("no jobs_meta row for %s in %+v", name, all)
	return store.JobMeta{}
}

// A job still running when its next run comes due is not started again.
func TestJobNeverOverlapsItself(t *testing.T) {
	var running, most, starts atomic.Int32
	started, release := make(chan struct{}, 10), make(chan struct{})
	r := start(t, jobs.Job{Name: "slow", Every: time.Second, Run: func(context.Context) (int, error) {
		n := running.Add(1)
		defer running.Add(-1)
		if n > most.Load() {
			most.Store(n)
		}
		starts.Add(1)
		started <- struct{}{}
		<-release
		return 0, nil
	}})
	r.tick(1, time.Second)
	<-started
	for range 5 { // five more periods while the first run still runs
		r.tick(1, time.Second)
	}
	select {
	case <-started:
		t.Fatal("a second run started while the first was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	r.finished(1)
	r.tick(1, time.Second)
	<-started
	r.finished(1)
	if most.Load() != 1 || starts.Load() != 2 {
		t.Fatalf("at most %d at once (want 1), %d starts (want 2)", most.Load(), starts.Load())
	}
}

// A job that panics is logged, counted and recorded, and the others keep
// their schedule.
func TestPanicStopsNothing(t *testing.T) {
	var counted atomic.Int32
	r := start(t,
		jobs.Job{Name: "boom", Every: time.Second, Run: func(context.Context) (int, error) { panic("nil map") }},
		jobs.Job{Name: "count", Every: time.Second, Run: func(context.Context) (int, error) {
			return int(counted.Add(1)), nil
		}},
	)
	for range 3 {
		r.tick(2, time.Second)
		got := r.finished(2)
		if len(got["boom"]) != 1 || len(got["count"]) != 1 || got["boom"][0].Err == nil {
			t.Fatalf("one period: %+v", got)
		}
	}
	if counted.Load() != 3 {
		t.Fatalf("the healthy job ran %d times, want 3", counted.Load())
	}
	boom := r.meta("boom")
	if boom.Runs != 3 || boom.Failures != 3 || boom.LastError != "panic: nil map" || boom.LastOKAt != "" {
		t.Fatalf("jobs_meta of the panicking job: %+v", boom)
	}
	if c := r.meta("count"); c.Runs != 3 || c.Failures != 0 || c.LastRows != 3 || c.LastError != "" {
		t.Fatalf("jobs_meta of the healthy job: %+v", c)
	}
	if v := counter(t, r.m, "invigil_job_errors_total", "boom"); v != 3 {
		t.Fatalf("invigil_job_errors_total{job_name=boom} = %v, want 3", v)
	}
}

// Each run's time, rows and error land in jobs_meta; a success clears the
// error and dates last_ok_at.
func TestRunsAreRecorded(t *testing.T) {
	results := []error{nil, errors.New("database is locked"), nil}
	var i atomic.Int32
	r := start(t, jobs.Job{Name: "sweep", Every: 5 * time.Second, Run: func(context.Context) (int, error) {
		k := i.Add(1) - 1
		return int(k) * 10, results[k]
	}})
	if m := r.meta("sweep"); m.Every != 5*time.Second || m.Runs != 0 || m.LastStartedAt != "" {
		t.Fatalf("before any run: %+v", m)
	}
	steps := []struct {
		runs, failures, rows int
		lastErr, lastOK      string
	}{
		{1, 0, 0, "", "2026-03-02T09:00:05.000Z"},
		{2, 1, 10, "database is locked", "2026-03-02T09:00:05.000Z"},
		{3, 1, 20, "", "2026-03-02T09:00:15.000Z"},
	}
	for k, st := range steps {
		r.tick(1, 5*time.Second)
		r.finished(1)
		m := r.meta("sweep")
		wantStart := store.FormatTime(time.Date(2026, 3, 2, 9, 0, 5*(k+1), 0, time.UTC))
		if m.Runs != st.runs || m.Failures != st.failures || m.LastRows != st.rows || m.LastError != st.lastErr ||
			m.LastOKAt != st.lastOK || m.LastStartedAt != wantStart {
			t.Fatalf("after run %d: %+v", k+1, m)
		}
	}
}

func counter(t *testing.T, m *metrics.Metrics, name, job string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "job_name" && l.GetValue() == job {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
