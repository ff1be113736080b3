package engine_test

// Engine-level benchmarks over a real SQLite store (no transport):
//
//	go test -run xxx -bench . -benchtime 3s ./app/engine/
//
// BenchmarkEngineFanout: one committed write → every one of N subscribers of
// the same (query, args) has its sink called. The engine gathers
// invalidations for Options.Window (5 ms by default) before re-running, so
// that window is a floor under ns/op; the window=50us variant shows the
// engine's own cost.
//
// BenchmarkEnginePrecision: 1000 live instances on distinct keys; each write
// touches one key and must re-run exactly one instance (runs/op == 1).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/store"
	"invigil/store/storetest"
)

const benchExam = "bench"

var benchWatcher = engine.Caller{User: identity.User{ID: "tutor-b", Role: identity.Tutor, Name: "Bench Tutor"}, Conn: 1}

func benchKey(studentID string) string { return "session:" + benchExam + ":" + studentID }

const sessionsKey = "exam:" + benchExam + ":sessions"

// newBenchEngine opens a store in a temp dir with students sessions and an
// engine over it with the given window (0: the engine's default).
func newBenchEngine(b *testing.B, students int, window time.Duration) (*store.DB, *engine.Engine) {
	b.Helper()
	db := storetest.MustOpen(b, clockwork.NewRealClock())
	ctx := context.Background()
	err := db.Update(ctx, func(tx *store.Tx) error {
		for i := range students {
			id := fmt.Sprintf("s%04d", i)
			if _, err := tx.StartSession(ctx, benchExam, id, "Student "+id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	e := engine.New(db, engine.Options{Window: window, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b.Cleanup(e.Close) // runs before the store's own cleanup (LIFO)

	// getExamSessions, as proctoring registers it.
	e.Query("bench.sessions", engine.Query{Prepare: func(ctx context.Context, c engine.Caller, _ json.RawMessage) (engine.Plan, error) {
		return engine.Plan{
			Keys: []string{sessionsKey}, Share: benchExam,
			Run: func(ctx context.Context) (v any, err error) {
				err = db.Read(ctx, func(r *store.Reader) error {
					v, err = r.ExamSessions(ctx, benchExam)
					return err
				})
				return v, err
			},
		}, nil
	}})
	// getSession-like: one student's row, on its own key.
	e.Query("bench.session", engine.Query{Prepare: func(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		var a struct {
			StudentID string `json:"student_id"`
		}
		if err := engine.Decode(raw, &a); err != nil {
			return engine.Plan{}, err
		}
		return engine.Plan{
			Keys: []string{benchKey(a.StudentID)}, Share: a.StudentID,
			Run: func(ctx context.Context) (v any, err error) {
				err = db.Read(ctx, func(r *store.Reader) error {
					v, err = r.Session(ctx, benchExam, a.StudentID)
					return err
				})
				return v, err
			},
		}, nil
	}})
	return db, e
}

// heartbeat writes answered=n for the student, touching the exam's and the
// session's keys as proctoring does.
func heartbeat(db *store.DB, studentID string, n int) error {
	return db.Update(context.Background(), func(tx *store.Tx) error {
		tx.Touch(sessionsKey, benchKey(studentID))
		return tx.Heartbeat(context.Background(), benchExam, studentID, n%100, n, nil)
	})
}

// marker is the bytes a result carries once the write with answered=n is in it.
func marker(n int) []byte { return []byte(`"answered_count":` + strconv.Itoa(n) + `,`) }

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func BenchmarkEngineFanout(b *testing.B) {
	for _, tc := range []struct {
		n      int
		window time.Duration
	}{{1, 0}, {100, 0}, {1000, 0}, {1000, 50 * time.Microsecond}} {
		name := fmt.Sprintf("N=%d", tc.n)
		if tc.window > 0 {
			name += fmt.Sprintf("/window=%dus", tc.window.Microseconds())
		}
		b.Run(name, func(b *testing.B) { benchEngineFanout(b, tc.n, tc.window) })
	}
}

func benchEngineFanout(b *testing.B, n int, window time.Duration) {
	db, e := newBenchEngine(b, 1, window)
	var (
		want    atomic.Pointer[[]byte]
		got     atomic.Int64
		allDone = make(chan struct{}, 1)
	)
	sink := func(v json.RawMessage, _ error) {
		m := want.Load()
		if m == nil || !bytes.Contains(v, *m) {
			return // the first value, at subscribe
		}
		if got.Add(1) == int64(n) {
			allDone <- struct{}{}
		}
	}
	for range n {
		sub, err := e.Subscribe(context.Background(), benchWatcher, "bench.sessions", nil, sink)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(sub.Close)
	}
	if st := e.Stats(); st.Instances != 1 || st.Subscriptions != n {
		b.Fatalf("want 1 shared instance and %d subscriptions, got %+v", n, st)
	}
	lat := make([]time.Duration, 0, 1024)
	runs0 := e.Stats().Runs
	i := 0
	for b.Loop() {
		i++
		m := marker(i)
		got.Store(0)
		want.Store(&m)
		start := time.Now()
		if err := heartbeat(db, "s0000", i); err != nil {
			b.Fatal(err)
		}
		select {
		case <-allDone:
		case <-time.After(10 * time.Second):
			b.Fatalf("write %d: %d of %d sinks called within 10s", i, got.Load(), n)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(e.Stats().Runs-runs0)/float64(b.N), "runs/op")
}

func BenchmarkEnginePrecision(b *testing.B) {
	const instances = 1000
	db, e := newBenchEngine(b, instances, 0)
	type slot struct {
		want atomic.Pointer[[]byte]
		done chan struct{}
	}
	slots := make([]*slot, instances)
	for k := range instances {
		s := &slot{done: make(chan struct{}, 1)}
		slots[k] = s
		args, _ := json.Marshal(map[string]string{"student_id": fmt.Sprintf("s%04d", k)})
		sub, err := e.Subscribe(context.Background(), benchWatcher, "bench.session", args, func(v json.RawMessage, _ error) {
			if m := s.want.Load(); m != nil && bytes.Contains(v, *m) {
				select {
				case s.done <- struct{}{}:
				default:
				}
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(sub.Close)
	}
	if st := e.Stats(); st.Instances != instances {
		b.Fatalf("want %d instances, got %+v", instances, st)
	}
	runs0 := e.Stats().Runs
	i := 0
	for b.Loop() {
		i++
		s := slots[i%instances]
		m := marker(i)
		s.want.Store(&m)
		if err := heartbeat(db, fmt.Sprintf("s%04d", i%instances), i); err != nil {
			b.Fatal(err)
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			b.Fatalf("write %d: its subscriber was not told within 10s", i)
		}
	}
	// Let a stray re-run (there should be none) land before counting.
	time.Sleep(20 * time.Millisecond)
	b.ReportMetric(float64(e.Stats().Runs-runs0)/float64(b.N), "runs/op")
}
