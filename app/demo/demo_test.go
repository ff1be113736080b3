package demo_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/demo"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/proctoring"
	"invigil/store"
	"invigil/store/storetest"
)

// The simulated students, driven by a fake clock: every student arrives,
// answers, submits, and sits again after the demo resets them.
func TestSimulatedStudentsKeepTheExamAlive(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	reg := exam.NewRegistry(db)
	svc := proctoring.New(db, reg, proctoring.Config{})
	svc.Register(e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := demo.Seed(ctx, reg); err != nil {
		t.Fatal(err)
	}
	const n = 3
	done := make(chan struct{})
	go func() {
		defer close(done)
		demo.Simulate(ctx, e, n, clock, slog.New(slog.NewTextHandler(io.Discard, nil)), svc.ResetSession)
	}()

	sittings := map[string]map[string]bool{} // student → session ids seen
	submitted := map[string]bool{}
	violations := 0
	for range 400 {
		if err := clock.BlockUntilContext(ctx, n); err != nil {
			t.Fatal(err)
		}
		rows, _ := db.ExamSessions(ctx, demo.ExamID)
		for _, s := range rows {
			if sittings[s.StudentID] == nil {
				sittings[s.StudentID] = map[string]bool{}
			}
			sittings[s.StudentID][s.ID] = true
			submitted[s.StudentID] = submitted[s.StudentID] || s.Status == store.StatusSubmitted
			violations = max(violations, s.ViolationCount)
			if s.CurrentQuestion < 0 || s.CurrentQuestion > demo.Questions || s.AnsweredCount > demo.Questions {
				t.Fatalf("out of range progress: %+v", s)
			}
		}
		clock.Advance(11 * time.Second)
	}
	cancel()
	clock.Advance(time.Hour) // wake every sleeper so Simulate returns
	<-done
	if len(sittings) != n {
		t.Fatalf("want %d students, saw %d", n, len(sittings))
	}
	for id, ids := range sittings {
		if !submitted[id] || len(ids) < 2 {
			t.Errorf("%s: submitted=%v, sittings=%d; want a submit and a second sitting", id, submitted[id], len(ids))
		}
	}
	if violations == 0 {
		t.Error("no simulated student ever broke a rule")
	}
}
