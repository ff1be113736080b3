package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/store"
	"invigil/store/storetest"
)

// The tests use exams as the data: a write sets an exam's title and touches
// "exam:<id>"; the query "exam.title" reads one exam's title.

func newEngine(t *testing.T) (*engine.Engine, *store.DB) {
	t.Helper()
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	e := engine.New(db, engine.Options{Window: 2 * time.Millisecond})
	t.Cleanup(e.Close)
	e.Query("exam.title", engine.Query{Prepare: func(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		var a struct {
			ID string `json:"id"`
		}
		if err := engine.Decode(raw, &a); err != nil {
			return engine.Plan{}, err
		}
		return engine.Plan{Keys: []string{"exam:" + a.ID}, Share: a.ID, Run: func(ctx context.Context) (any, error) {
			ex, err := db.Exam(ctx, a.ID)
			if errors.Is(err, store.ErrNotFound) {
				return "", nil
			}
			return ex.Title, err
		}}, nil
	}})
	return e, db
}

func setTitle(t testing.TB, db *store.DB, id, title string) {
	t.Helper()
	err := db.Update(context.Background(), func(tx *store.Tx) error {
		tx.Touch("exam:" + id)
		return tx.UpsertExam(context.Background(), store.Exam{ID: id, Title: title, Status: "open"})
	})
	if err != nil {
		t.Fatal(err)
	}
}

var alice = engine.Caller{User: identity.User{ID: "alice", Role: identity.Tutor}}

// recorder is a sink that keeps every value it got.
type recorder struct {
	mu     sync.Mutex
	values []string
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) sink(v json.RawMessage, _ error) {
	var s string
	json.Unmarshal(v, &s)
	r.mu.Lock()
	r.values = append(r.values, s)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.values...)
}

// waitFor waits until the last value is want.
func (r *recorder) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		if v := r.snapshot(); len(v) > 0 && v[len(v)-1] == want {
			return
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("never saw %q; got %q", want, r.snapshot())
		}
	}
}

func subscribe(t *testing.T, e *engine.Engine, id string, r *recorder) *engine.Subscription {
	t.Helper()
	sub, err := e.Subscribe(context.Background(), alice, "exam.title", json.RawMessage(`{"id":"`+id+`"}`), r.sink)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// runCounter counts query executions per share.
func runCounter(e *engine.Engine) func() map[string]int {
	var mu sync.Mutex
	runs := map[string]int{}
	e.SetRunHook(func(name, share string) {
		mu.Lock()
		runs[share]++
		mu.Unlock()
	})
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := runs
		runs = map[string]int{}
		return out
	}
}

func TestWriteRerunsOnlyItsSubscriptions(t *testing.T) {
	e, db := newEngine(t)
	take := runCounter(e)
	recs := map[string]*recorder{}
	for i := range 50 {
		id := fmt.Sprintf("e%02d", i)
		setTitle(t, db, id, "v0")
		recs[id] = newRecorder()
		subscribe(t, e, id, recs[id])
		recs[id].waitFor(t, "v0")
	}
	if got := take(); len(got) != 50 {
		t.Fatalf("first runs: want one per exam (50), got %d", len(got))
	}
	setTitle(t, db, "e07", "v1")
	recs["e07"].waitFor(t, "v1")
	time.Sleep(30 * time.Millisecond) // a stray re-run would land within a few windows
	if got := take(); len(got) != 1 || got["e07"] != 1 {
		t.Fatalf("want exactly one re-run, of e07; got %v", got)
	}
	for id, r := range recs {
		if id != "e07" && len(r.snapshot()) != 1 {
			t.Fatalf("%s got %d values, want only its first", id, len(r.snapshot()))
		}
	}
}

func TestBurstCoalesces(t *testing.T) {
	e, db := newEngine(t)
	take := runCounter(e)
	setTitle(t, db, "x", "v0")
	r := newRecorder()
	subscribe(t, e, "x", r)
	r.waitFor(t, "v0")
	take()
	const writes = 200
	var wg sync.WaitGroup
	for i := range writes {
		wg.Go(func() { setTitle(t, db, "x", fmt.Sprintf("w%d", i)) })
	}
	wg.Wait()
	setTitle(t, db, "x", "final")
	r.waitFor(t, "final")
	runs := take()["x"]
	if runs >= writes/4 {
		t.Fatalf("%d writes caused %d re-runs: bursts do not coalesce", writes+1, runs)
	}
	t.Logf("%d writes → %d re-runs, %d values pushed", writes+1, runs, len(r.snapshot())-1)
}

func TestUnchangedResultIsNotPushed(t *testing.T) {
	e, db := newEngine(t)
	take := runCounter(e)
	setTitle(t, db, "x", "same")
	r := newRecorder()
	subscribe(t, e, "x", r)
	r.waitFor(t, "same")
	take()
	setTitle(t, db, "x", "same") // touches the key, changes nothing visible
	deadline := time.Now().Add(2 * time.Second)
	for take()["x"] == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if got := r.snapshot(); len(got) != 1 {
		t.Fatalf("an equal result was pushed again: %q", got)
	}
}

func TestSubscribersShareOneExecution(t *testing.T) {
	e, db := newEngine(t)
	take := runCounter(e)
	setTitle(t, db, "x", "v0")
	recs := make([]*recorder, 100)
	for i := range recs {
		recs[i] = newRecorder()
		subscribe(t, e, "x", recs[i])
	}
	if got := take()["x"]; got != 1 {
		t.Fatalf("100 subscribers: want 1 first run, got %d", got)
	}
	setTitle(t, db, "x", "v1")
	for _, r := range recs {
		r.waitFor(t, "v1")
	}
	if got := take()["x"]; got != 1 {
		t.Fatalf("one write to 100 subscribers: want 1 run, got %d", got)
	}
}

func TestNoUpdateIsLostWhileSubscribing(t *testing.T) {
	e, db := newEngine(t)
	var wg sync.WaitGroup
	for i := range 300 {
		id := fmt.Sprintf("race%d", i)
		setTitle(t, db, id, "old")
		r := newRecorder()
		wg.Go(func() { setTitle(t, db, id, "new") })
		wg.Go(func() {
			sub := subscribe(t, e, id, r)
			defer sub.Close()
			r.waitFor(t, "new")
		})
	}
	wg.Wait()
}

func TestRolledBackWriteNotifiesNobody(t *testing.T) {
	e, db := newEngine(t)
	take := runCounter(e)
	setTitle(t, db, "x", "v0")
	r := newRecorder()
	subscribe(t, e, "x", r)
	r.waitFor(t, "v0")
	take()
	err := db.Update(context.Background(), func(tx *store.Tx) error {
		tx.Touch("exam:x")
		if err := tx.UpsertExam(context.Background(), store.Exam{ID: "x", Title: "ghost", Status: "open"}); err != nil {
			return err
		}
		return errors.New("changed my mind")
	})
	if err == nil {
		t.Fatal("the write should fail")
	}
	time.Sleep(20 * time.Millisecond)
	if got := take(); len(got) != 0 || len(r.snapshot()) != 1 {
		t.Fatalf("a rolled-back write re-ran %v and pushed %q", got, r.snapshot())
	}
}

func TestCloseForgetsTheSubscription(t *testing.T) {
	e, db := newEngine(t)
	setTitle(t, db, "x", "v0")
	a, b := newRecorder(), newRecorder()
	sa, sb := subscribe(t, e, "x", a), subscribe(t, e, "x", b)
	if st := e.Stats(); st.Subscriptions != 2 || st.Instances != 1 {
		t.Fatalf("want 2 subscriptions on 1 instance, got %+v", st)
	}
	sa.Close()
	setTitle(t, db, "x", "v1")
	b.waitFor(t, "v1")
	if got := a.snapshot(); len(got) != 1 {
		t.Fatalf("a closed subscription got %q", got)
	}
	sb.Close()
	if st := e.Stats(); st.Subscriptions != 0 || st.Instances != 0 {
		t.Fatalf("after closing all: %+v", st)
	}
}

func TestPrepareErrorsReachTheCaller(t *testing.T) {
	e, _ := newEngine(t)
	var calls atomic.Int32
	e.Query("private", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		calls.Add(1)
		return engine.Plan{}, apperr.New(apperr.Forbidden, "no")
	}})
	cases := []struct {
		name   string
		caller engine.Caller
		query  string
		want   apperr.Code
	}{
		{"unknown query", alice, "nope", apperr.NotFound},
		{"anonymous on a private query", engine.Caller{}, "private", apperr.Unauthenticated},
		{"forbidden by the query", alice, "private", apperr.Forbidden},
		{"bad arguments", alice, "exam.title", apperr.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := json.RawMessage(`{}`)
			if c.query == "exam.title" {
				args = json.RawMessage(`{"id": 7}`)
			}
			_, err := e.Subscribe(context.Background(), c.caller, c.query, args, func(json.RawMessage, error) {})
			if got := apperr.CodeOf(err); got != c.want {
				t.Fatalf("want %s, got %v", c.want, err)
			}
		})
	}
	if calls.Load() != 1 {
		t.Fatalf("an anonymous caller reached a private query's Prepare")
	}
	if st := e.Stats(); st.Subscriptions != 0 {
		t.Fatalf("failed subscriptions were kept: %+v", st)
	}
}

// An expensive query under a stream of writes is re-run at a pace set by
// its own cost (here ≥ 5× its 20 ms), and still ends on the latest value.
func TestExpensiveQueriesArePaced(t *testing.T) {
	db := storetest.MustOpen(t, clockwork.NewRealClock())
	e := engine.New(db, engine.Options{Window: time.Millisecond, PaceFactor: 4})
	t.Cleanup(e.Close)
	e.Query("slow", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		return engine.Plan{Keys: []string{"exam:x"}, Share: "x", Run: func(ctx context.Context) (any, error) {
			time.Sleep(20 * time.Millisecond)
			ex, err := db.Exam(ctx, "x")
			return ex.Title, err
		}}, nil
	}})
	take := runCounter(e)
	setTitle(t, db, "x", "w0")
	r := newRecorder()
	if _, err := e.Subscribe(context.Background(), alice, "slow", nil, r.sink); err != nil {
		t.Fatal(err)
	}
	take()
	start := time.Now()
	i := 0
	for time.Since(start) < 600*time.Millisecond {
		i++
		setTitle(t, db, "x", fmt.Sprintf("w%d", i))
		time.Sleep(2 * time.Millisecond)
	}
	r.waitFor(t, fmt.Sprintf("w%d", i))
	runs := take()["x"]
	// Unpaced, a 20 ms query re-runs about every 21 ms: ~29 times in 600 ms.
	if runs > 12 {
		t.Fatalf("%d writes in 600 ms re-ran a 20 ms query %d times: not paced", i, runs)
	}
	t.Logf("%d writes → %d re-runs of a 20 ms query", i, runs)
}
