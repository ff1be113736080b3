package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/engine"
	"invigil/app/identity"
	"invigil/store"
	"invigil/store/storetest"
)

// The tests use two queries over a real store:
//   - "exam.title" {id}: a value query, an exam's title, on key "exam:<id>";
//   - "sessions" {limit?, tail?, desc?}: a list query, exam x's sessions by
//     student name, on key "exam:x:sessions", whose writes name the rows.

const listKey = "exam:x:sessions"

type testEngine struct {
	*engine.Engine
	db *store.DB
	// fetched and full count the list's row reads by id and its whole runs.
	fetched, full atomic.Int64
	fetchedIDs    [][]string
	mu            sync.Mutex
}

func newEngine(t testing.TB, opts ...func(*engine.Options)) *testEngine {
	t.Helper()
	o := engine.Options{Clock: clockwork.NewRealClock()}
	for _, f := range opts {
		f(&o)
	}
	db := storetest.MustOpen(t, o.Clock)
	te := &testEngine{Engine: engine.New(db, o), db: db}
	t.Cleanup(te.Close)
	te.Query("exam.title", engine.Query{Prepare: func(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		var a struct {
			ID string `json:"id"`
		}
		if err := args.Decode(raw, &a); err != nil {
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
	te.Query("sessions", engine.Query{Prepare: func(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		var a struct {
			Limit int  `json:"limit"`
			Tail  bool `json:"tail"`
			Desc  bool `json:"desc"`
		}
		if err := args.Decode(raw, &a); err != nil {
			return engine.Plan{}, err
		}
		return engine.Plan{Share: string(raw), List: &engine.List{
			Key: listKey, Limit: a.Limit, Tail: a.Tail, Desc: a.Desc,
			All: func(ctx context.Context) ([]engine.Row, error) {
				te.full.Add(1)
				s, err := db.ExamSessions(ctx, "x")
				return sessionRows(s), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				te.fetched.Add(int64(len(ids)))
				te.mu.Lock()
				te.fetchedIDs = append(te.fetchedIDs, slices.Sorted(slices.Values(ids)))
				te.mu.Unlock()
				s, err := db.SessionsByID(ctx, "x", ids)
				return sessionRows(s), err
			},
			Carried: func(v any) (engine.Row, bool) {
				s := v.(store.Session)
				return sessionRows([]store.Session{s})[0], s.ExamID == "x"
			},
		}}, nil
	}})
	return te
}

// row is a session as the "sessions" list shows it.
type row struct {
	ID       string `json:"_id"`
	Student  string `json:"student_id"`
	Name     string `json:"student_name"`
	Answered int    `json:"answered_count"`
}

func sessionRows(ss []store.Session) []engine.Row {
	out := make([]engine.Row, len(ss))
	for i, s := range ss {
		out[i] = engine.Row{ID: s.ID, Order: s.StudentName, Value: row{s.ID, s.StudentID, s.StudentName, s.AnsweredCount}}
	}
	return out
}

func (te *testEngine) settle(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := te.Settle(ctx); err != nil {
		t.Fatalf("the engine did not settle: %v", err)
	}
}

func (te *testEngine) write(t testing.TB, f func(tx *store.Tx) error) {
	t.Helper()
	if err := te.db.Update(context.Background(), f); err != nil {
		t.Fatal(err)
	}
}

func setTitle(t testing.TB, te *testEngine, id, title string) {
	t.Helper()
	te.write(t, func(tx *store.Tx) error {
		tx.Touch("exam:" + id)
		_, err := tx.UpsertExam(store.Exam{ID: id, Title: title, Status: "open"})
		return err
	})
}

// start creates (or renames) student's session in exam x.
func start(t testing.TB, te *testEngine, student, name string) {
	t.Helper()
	te.write(t, func(tx *store.Tx) error {
		s, err := tx.StartSession("x", student, name)
		tx.TouchRows(listKey, s.ID)
		return err
	})
}

func heartbeat(t testing.TB, te *testEngine, student string, answered int) {
	t.Helper()
	te.write(t, func(tx *store.Tx) error {
		s, err := tx.Reader().Session(context.Background(), "x", student)
		if err != nil {
			return err
		}
		tx.TouchRows(listKey, s.ID)
		return tx.Heartbeat("x", student, 1, answered, "")
	})
}

func remove(t testing.TB, te *testEngine, student string) {
	t.Helper()
	te.write(t, func(tx *store.Tx) error {
		s, err := tx.Reader().Session(context.Background(), "x", student)
		if err != nil {
			return err
		}
		tx.TouchRows(listKey, s.ID)
		return tx.DeleteSession("x", student)
	})
}

var alice = engine.Caller{User: identity.User{ID: "alice", Role: identity.Tutor}}

// recorder is a sink that keeps what its subscriber holds: the value of a
// value query, or a list's rows rebuilt from data and deltas.
type recorder struct {
	mu      sync.Mutex
	values  []string          // every whole value, decoded as a string (value queries)
	rows    map[string]string // a list's rows by id
	order   []string
	updates int
	deltas  int
	err     error
	notify  chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) sink(u engine.Update, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}()
	if err != nil {
		r.err = err
		return
	}
	r.updates++
	if !u.Replace {
		r.deltas++
		d := u.Delta()
		for _, id := range d.Remove {
			delete(r.rows, id)
			r.order = slices.DeleteFunc(r.order, func(x string) bool { return x == id })
		}
		for _, up := range d.Upsert {
			if _, ok := r.rows[up.ID]; !ok && d.Order == nil {
				panic("a delta added row " + up.ID + " without an order")
			}
			r.rows[up.ID] = string(up.Raw)
		}
		if d.Order != nil {
			r.order = d.Order
		}
		return
	}
	whole := u.Whole()
	var s string
	if json.Unmarshal(whole, &s) == nil {
		r.values = append(r.values, s)
		return
	}
	var list []json.RawMessage
	if err := json.Unmarshal(whole, &list); err != nil {
		panic(err)
	}
	r.rows, r.order = map[string]string{}, nil
	for _, raw := range list {
		var x struct {
			ID string `json:"_id"`
		}
		json.Unmarshal(raw, &x)
		r.rows[x.ID] = string(raw)
		r.order = append(r.order, x.ID)
	}
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.values...)
}

// list is the rows the subscriber holds, in order, as a JSON array.
func (r *recorder) list() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	parts := make([]string, len(r.order))
	for i, id := range r.order {
		parts[i] = r.rows[id]
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func (r *recorder) counts() (updates, deltas int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updates, r.deltas
}

// waitFor waits until the last value is want.
func (r *recorder) waitFor(t testing.TB, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
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

func (te *testEngine) subscribe(t testing.TB, query, rawArgs string, r *recorder) *engine.Subscription {
	t.Helper()
	sub, err := te.Subscribe(context.Background(), alice, query, json.RawMessage(rawArgs), r.sink)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func (te *testEngine) title(t testing.TB, id string, r *recorder) *engine.Subscription {
	t.Helper()
	return te.subscribe(t, "exam.title", `{"id":"`+id+`"}`, r)
}

// runCounter counts query executions per share.
func runCounter(e *testEngine) func() map[string]int {
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
	e := newEngine(t)
	take := runCounter(e)
	recs := map[string]*recorder{}
	for i := range 50 {
		id := fmt.Sprintf("e%02d", i)
		setTitle(t, e, id, "v0")
		recs[id] = newRecorder()
		e.title(t, id, recs[id])
		recs[id].waitFor(t, "v0")
	}
	if got := take(); len(got) != 50 {
		t.Fatalf("first runs: want one per exam (50), got %d", len(got))
	}
	setTitle(t, e, "e07", "v1")
	recs["e07"].waitFor(t, "v1")
	e.settle(t)
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
	e := newEngine(t)
	take := runCounter(e)
	setTitle(t, e, "x", "v0")
	r := newRecorder()
	e.title(t, "x", r)
	r.waitFor(t, "v0")
	take()
	const writes = 200
	var wg sync.WaitGroup
	for i := range writes {
		wg.Go(func() { setTitle(t, e, "x", fmt.Sprintf("w%d", i)) })
	}
	wg.Wait()
	setTitle(t, e, "x", "final")
	r.waitFor(t, "final")
	runs := take()["x"]
	if runs >= writes/4 {
		t.Fatalf("%d writes caused %d re-runs: bursts do not coalesce", writes+1, runs)
	}
	t.Logf("%d writes → %d re-runs, %d values pushed", writes+1, runs, len(r.snapshot())-1)
}

// TestUnchangedResultIsNotPushed: a write that touches the key but changes
// nothing visible re-runs the query (exactly once) and pushes nothing.
func TestUnchangedResultIsNotPushed(t *testing.T) {
	e := newEngine(t)
	take := runCounter(e)
	setTitle(t, e, "x", "same")
	r := newRecorder()
	e.title(t, "x", r)
	r.waitFor(t, "same")
	e.settle(t)
	take()
	pushes := e.Stats().Pushes
	setTitle(t, e, "x", "same")
	e.settle(t)
	if runs := take()["x"]; runs != 1 {
		t.Fatalf("the touching write should re-run the query once, ran %d times", runs)
	}
	if got := r.snapshot(); len(got) != 1 || e.Stats().Pushes != pushes {
		t.Fatalf("an equal result was pushed again: %q", got)
	}
}

func TestSubscribersShareOneExecution(t *testing.T) {
	e := newEngine(t)
	take := runCounter(e)
	setTitle(t, e, "x", "v0")
	recs := make([]*recorder, 100)
	for i := range recs {
		recs[i] = newRecorder()
		e.title(t, "x", recs[i])
	}
	if got := take()["x"]; got != 1 {
		t.Fatalf("100 subscribers: want 1 first run, got %d", got)
	}
	setTitle(t, e, "x", "v1")
	for _, r := range recs {
		r.waitFor(t, "v1")
	}
	if got := take()["x"]; got != 1 {
		t.Fatalf("one write to 100 subscribers: want 1 run, got %d", got)
	}
}

func TestNoUpdateIsLostWhileSubscribing(t *testing.T) {
	e := newEngine(t)
	var wg sync.WaitGroup
	for i := range 300 {
		id := fmt.Sprintf("race%d", i)
		setTitle(t, e, id, "old")
		r := newRecorder()
		wg.Go(func() { setTitle(t, e, id, "new") })
		wg.Go(func() {
			sub := e.title(t, id, r)
			defer sub.Close()
			r.waitFor(t, "new")
		})
	}
	wg.Wait()
}

// TestNoRowIsLostWhileSubscribing: the same for a list patched by rows,
// with heartbeats racing subscriptions that join a running instance.
func TestNoRowIsLostWhileSubscribing(t *testing.T) {
	e := newEngine(t)
	for i := range 20 {
		start(t, e, fmt.Sprintf("s%02d", i), fmt.Sprintf("Student %02d", i))
	}
	keep := newRecorder()
	e.subscribe(t, "sessions", `{}`, keep) // keeps the instance alive
	var wg sync.WaitGroup
	recs := make([]*recorder, 40)
	for i := range recs {
		recs[i] = newRecorder()
		wg.Go(func() { heartbeat(t, e, fmt.Sprintf("s%02d", i%20), 100+i) })
		wg.Go(func() { e.subscribe(t, "sessions", `{}`, recs[i]) })
	}
	wg.Wait()
	e.settle(t)
	want := e.get(t, "sessions", `{}`)
	for i, r := range append(recs, keep) {
		if diff := cmp.Diff(want, r.list()); diff != "" {
			t.Fatalf("subscriber %d holds (-current +held):\n%s", i, diff)
		}
	}
}

func (te *testEngine) get(t testing.TB, query, rawArgs string) string {
	t.Helper()
	raw, err := te.Get(context.Background(), alice, query, json.RawMessage(rawArgs))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func TestRolledBackWriteNotifiesNobody(t *testing.T) {
	e := newEngine(t)
	take := runCounter(e)
	setTitle(t, e, "x", "v0")
	r := newRecorder()
	e.title(t, "x", r)
	r.waitFor(t, "v0")
	take()
	err := e.db.Update(context.Background(), func(tx *store.Tx) error {
		tx.Touch("exam:x")
		if _, err := tx.UpsertExam(store.Exam{ID: "x", Title: "ghost", Status: "open"}); err != nil {
			return err
		}
		return errors.New("changed my mind")
	})
	if err == nil {
		t.Fatal("the write should fail")
	}
	e.settle(t)
	if got := take(); len(got) != 0 || len(r.snapshot()) != 1 {
		t.Fatalf("a rolled-back write re-ran %v and pushed %q", got, r.snapshot())
	}
}

func TestCloseForgetsTheSubscription(t *testing.T) {
	e := newEngine(t)
	setTitle(t, e, "x", "v0")
	a, b := newRecorder(), newRecorder()
	sa, sb := e.title(t, "x", a), e.title(t, "x", b)
	if st := e.Stats(); st.Subscriptions != 2 || st.Instances != 1 {
		t.Fatalf("want 2 subscriptions on 1 instance, got %+v", st)
	}
	sa.Close()
	setTitle(t, e, "x", "v1")
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
	e := newEngine(t)
	var calls atomic.Int32
	e.Query("private", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		calls.Add(1)
		return engine.Plan{}, apperr.New(apperr.Forbidden, "no")
	}})
	cases := []struct {
		name   string
		caller engine.Caller
		query  string
		args   string
		want   apperr.Code
	}{
		{"unknown query", alice, "nope", `{}`, apperr.NotFound},
		{"anonymous on a private query", engine.Caller{}, "private", `{}`, apperr.Unauthenticated},
		{"forbidden by the query", alice, "private", `{}`, apperr.Forbidden},
		{"bad arguments", alice, "exam.title", `{"id": 7}`, apperr.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Subscribe(context.Background(), c.caller, c.query, json.RawMessage(c.args), func(engine.Update, error) {})
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

// TestExpensiveQueriesArePaced: a query whose run costs 20 ms (of the
// engine's clock) is re-run no sooner than 4×20 ms after its last run,
// however many writes come in between, and ends on the latest value.
func TestExpensiveQueriesArePaced(t *testing.T) {
	fake := clockwork.NewFakeClock()
	e := newEngine(t, func(o *engine.Options) { o.Clock = fake; o.PaceFactor = 4 })
	e.Query("slow", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		return engine.Plan{Keys: []string{"exam:x"}, Share: "x", Run: func(ctx context.Context) (any, error) {
			fake.Advance(20 * time.Millisecond) // what this run costs
			ex, err := e.db.Exam(ctx, "x")
			return ex.Title, err
		}}, nil
	}})
	take := runCounter(e)
	setTitle(t, e, "x", "w0")
	r := newRecorder()
	e.subscribe(t, "slow", `{}`, r)
	r.waitFor(t, "w0")
	take()
	// 80 ms of pace after the first run: writes now wait for it.
	for i := 1; i <= 10; i++ {
		setTitle(t, e, "x", fmt.Sprintf("w%d", i))
	}
	settleReady := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.SettleReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	settleReady()
	if runs := take()["x"]; runs != 0 {
		t.Fatalf("re-ran %d times within its pace", runs)
	}
	fake.Advance(79 * time.Millisecond)
	settleReady()
	if runs := take()["x"]; runs != 0 {
		t.Fatalf("re-ran %d times 1 ms before its pace ended", runs)
	}
	fake.Advance(time.Millisecond)
	r.waitFor(t, "w10")
	if runs := take()["x"]; runs != 1 {
		t.Fatalf("10 writes within the pace: want 1 re-run after it, got %d", runs)
	}
}

// TestRightsCheckedAgainAfterRegistering: Prepare checks the caller's
// rights before the subscription is registered for re-checks; a change of
// rights committed in between must still end the subscription.
func TestRightsCheckedAgainAfterRegistering(t *testing.T) {
	e := newEngine(t)
	setTitle(t, e, "gate", "open")
	allowed := func(ctx context.Context) error {
		ex, err := e.db.Exam(ctx, "gate")
		if err != nil {
			return err
		}
		if ex.Title != "open" {
			return apperr.New(apperr.Forbidden, "closed")
		}
		return nil
	}
	e.Query("gated", engine.Query{Prepare: func(ctx context.Context, c engine.Caller, _ json.RawMessage) (engine.Plan, error) {
		if err := allowed(ctx); err != nil {
			return engine.Plan{}, err
		}
		// The rights change right after the check, before registration.
		setTitle(t, e, "gate", "closed")
		return engine.Plan{Keys: []string{"exam:x"}, Share: "g", Run: func(context.Context) (any, error) { return "secret", nil },
			Recheck: allowed, RecheckKeys: []string{"exam:gate"}}, nil
	}})
	r := newRecorder()
	sub, err := e.Subscribe(context.Background(), alice, "gated", nil, r.sink)
	if apperr.CodeOf(err) != apperr.Forbidden {
		t.Fatalf("want forbidden, got sub=%v err=%v (values %q)", sub, err, r.snapshot())
	}
	if st := e.Stats(); st.Subscriptions != 0 || st.Instances != 0 {
		t.Fatalf("the refused subscription was kept: %+v", st)
	}
}

// TestPanicsEndOnlyTheirSubscription: a query that panics on its first run
// or on a re-run ends its subscriptions with internal; the engine goes on
// serving others, and a panicking function is that call's internal error.
func TestPanicsEndOnlyTheirSubscription(t *testing.T) {
	e := newEngine(t)
	e.Func("boom", func(context.Context, engine.Caller, json.RawMessage) (any, error) { panic("boom") })
	var armed atomic.Bool
	e.Query("fragile", engine.Query{Prepare: func(_ context.Context, _ engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		return engine.Plan{Keys: []string{"exam:f"}, Share: string(raw), Run: func(context.Context) (any, error) {
			if armed.Load() || string(raw) == `{"at":"first"}` {
				panic("fragile")
			}
			return "fine", nil
		}}, nil
	}})
	if _, err := e.Call(context.Background(), alice, "boom", nil); apperr.CodeOf(err) != apperr.Internal {
		t.Fatalf("a panicking function: want internal, got %v", err)
	}
	first, later, other := newRecorder(), newRecorder(), newRecorder()
	e.subscribe(t, "fragile", `{"at":"first"}`, first)
	e.subscribe(t, "fragile", `{"at":"later"}`, later)
	setTitle(t, e, "x", "v0")
	e.title(t, "x", other)
	armed.Store(true)
	setTitle(t, e, "f", "boom")
	e.settle(t)
	for name, r := range map[string]*recorder{"first run": first, "re-run": later} {
		r.mu.Lock()
		if apperr.CodeOf(r.err) != apperr.Internal || apperr.As(r.err).Message != "internal error" {
			t.Errorf("%s panic: want the subscription ended with internal, got %v", name, r.err)
		}
		r.mu.Unlock()
	}
	setTitle(t, e, "x", "v1")
	other.waitFor(t, "v1")
	if st := e.Stats(); st.Subscriptions != 1 {
		t.Fatalf("want only the healthy subscription left, got %+v", st)
	}
}

// TestHeartbeatReReadsOnlyItsRow: in a 100-row list, a write that names
// one row costs a fetch of that row and a one-row delta, not a whole run.
func TestHeartbeatReReadsOnlyItsRow(t *testing.T) {
	e := newEngine(t)
	for i := range 100 {
		start(t, e, fmt.Sprintf("s%03d", i), fmt.Sprintf("Student %03d", i))
	}
	r := newRecorder()
	e.subscribe(t, "sessions", `{}`, r)
	e.settle(t)
	fullBefore, fetchedBefore := e.full.Load(), e.fetched.Load()
	heartbeat(t, e, "s042", 7)
	e.settle(t)
	if full := e.full.Load() - fullBefore; full != 0 {
		t.Fatalf("a one-row write re-ran the list whole %d times", full)
	}
	if n := e.fetched.Load() - fetchedBefore; n != 1 {
		t.Fatalf("a one-row write re-read %d rows, want 1", n)
	}
	updates, deltas := r.counts()
	if updates != 2 || deltas != 1 {
		t.Fatalf("want the first value and one delta, got %d updates, %d deltas", updates, deltas)
	}
	if diff := cmp.Diff(e.get(t, "sessions", `{}`), r.list()); diff != "" {
		t.Fatalf("rebuilt list (-current +held):\n%s", diff)
	}
	if st := e.Stats(); st.PatchRuns != 1 || st.RowsPatched != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestCarriedRowsAreNotReadAgain: a write that carries its row's value
// (a heartbeat's UPDATE … RETURNING) patches the list with no read at all;
// a row touched without a value after one with a value is read again, since
// the later touch wins.
func TestCarriedRowsAreNotReadAgain(t *testing.T) {
	e := newEngine(t)
	for i := range 20 {
		start(t, e, fmt.Sprintf("s%03d", i), fmt.Sprintf("Student %03d", i))
	}
	r := newRecorder()
	e.subscribe(t, "sessions", `{}`, r)
	e.settle(t)
	beat := func(student string, answered int, thenReread bool) {
		e.write(t, func(tx *store.Tx) error {
			s, ok, err := tx.Beat("x", student, 1, answered, "", tx.Now())
			if err != nil || !ok {
				return fmt.Errorf("beat %s: ok=%v err=%v", student, ok, err)
			}
			tx.TouchRow(listKey, s.ID, s)
			if thenReread {
				tx.TouchRows(listKey, s.ID)
			}
			return nil
		})
	}
	fullBefore, fetchedBefore, before := e.full.Load(), e.fetched.Load(), e.Stats()
	beat("s007", 5, false)
	e.settle(t)
	if n := e.fetched.Load() - fetchedBefore; n != 0 {
		t.Fatalf("a carried row was read again %d times", n)
	}
	if full := e.full.Load() - fullBefore; full != 0 {
		t.Fatalf("a carried row re-ran the list whole %d times", full)
	}
	if st := e.Stats(); st.RowsCarried-before.RowsCarried != 1 || st.PatchRuns-before.PatchRuns != 1 {
		t.Fatalf("want one patch of one carried row, stats before %+v after %+v", before, st)
	}
	if diff := cmp.Diff(e.get(t, "sessions", `{}`), r.list()); diff != "" {
		t.Fatalf("rebuilt list (-current +held):\n%s", diff)
	}
	beat("s008", 6, true)
	e.settle(t)
	if n := e.fetched.Load() - fetchedBefore; n != 1 {
		t.Fatalf("a row touched again without its value was read %d times, want 1", n)
	}
	if diff := cmp.Diff(e.get(t, "sessions", `{}`), r.list()); diff != "" {
		t.Fatalf("rebuilt list (-current +held):\n%s", diff)
	}
	// A carried row of another exam does not belong: it leaves the list.
	e.write(t, func(tx *store.Tx) error {
		s, err := tx.Reader().Session(context.Background(), "x", "s009")
		if err != nil {
			return err
		}
		s.ExamID = "elsewhere"
		tx.TouchRow(listKey, s.ID, s)
		return nil
	})
	e.settle(t)
	if held := r.list(); strings.Contains(held, `"s009"`) || !strings.Contains(held, `"s010"`) {
		t.Fatalf("a carried row that does not belong should leave the list, and only it: %s", held)
	}
}

// TestListFallsBackToAWholeRun: what cannot be judged row by row re-runs
// the list whole, and the subscriber still ends with the right rows.
func TestListFallsBackToAWholeRun(t *testing.T) {
	cases := []struct {
		name  string
		args  string
		write func(t *testing.T, e *testEngine)
		whole bool
	}{
		{"a whole-key touch", `{}`, func(t *testing.T, e *testEngine) {
			e.write(t, func(tx *store.Tx) error { tx.Touch(listKey); return nil })
		}, true},
		{"more rows than MaxPatch", `{}`, func(t *testing.T, e *testEngine) {
			e.write(t, func(tx *store.Tx) error {
				for i := range 10 {
					s, _ := tx.Reader().Session(context.Background(), "x", fmt.Sprintf("s%02d", i))
					tx.TouchRows(listKey, s.ID)
				}
				return nil
			})
		}, true},
		{"a top-5 row leaves the top", `{"limit":5}`, func(t *testing.T, e *testEngine) {
			start(t, e, "s01", "Zed") // renamed: sorts last now
		}, true},
		{"a top-5 row moves within the top", `{"limit":5}`, func(t *testing.T, e *testEngine) {
			start(t, e, "s03", "Student 00a")
		}, false},
		{"a new row enters the top 5", `{"limit":5}`, func(t *testing.T, e *testEngine) {
			start(t, e, "new", "Aaron")
		}, false},
		{"a new row past the top 5", `{"limit":5}`, func(t *testing.T, e *testEngine) {
			start(t, e, "new", "Zoe")
		}, false},
		{"a row leaves the last 5", `{"limit":5,"tail":true}`, func(t *testing.T, e *testEngine) {
			remove(t, e, "s18")
		}, true},
		{"a row leaves a list with room", `{"limit":50}`, func(t *testing.T, e *testEngine) {
			remove(t, e, "s18")
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(t, func(o *engine.Options) { o.MaxPatch = 8 })
			for i := range 20 {
				start(t, e, fmt.Sprintf("s%02d", i), fmt.Sprintf("Student %02d", i))
			}
			r := newRecorder()
			e.subscribe(t, "sessions", c.args, r)
			e.settle(t)
			before := e.full.Load()
			c.write(t, e)
			e.settle(t)
			if whole := e.full.Load() > before; whole != c.whole {
				t.Fatalf("whole run: got %v, want %v", whole, c.whole)
			}
			if diff := cmp.Diff(e.get(t, "sessions", c.args), r.list()); diff != "" {
				t.Fatalf("rebuilt list (-current +held):\n%s", diff)
			}
		})
	}
}

// TestDeltasRebuildTheWhole is a property test: random writes (new rows,
// updates, renames that move rows, removals, whole-key touches) against
// lists of every shape; after each settle, every delta subscriber holds
// exactly what the query returns, as does a subscriber that joined late.
func TestDeltasRebuildTheWhole(t *testing.T) {
	shapes := []string{`{}`, `{"desc":true}`, `{"limit":7}`, `{"limit":7,"tail":true}`, `{"limit":7,"desc":true}`}
	e := newEngine(t, func(o *engine.Options) { o.MaxPatch = 6 })
	rng := rand.New(rand.NewPCG(7, 11))
	recs := map[string]*recorder{}
	for _, s := range shapes {
		recs[s] = newRecorder()
		e.subscribe(t, "sessions", s, recs[s])
	}
	names := []string{"Ada", "Ben", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", "Ida", "Jo", "Kit", "Lu"}
	alive := map[string]bool{}
	for step := range 300 {
		var wg sync.WaitGroup
		for range 1 + rng.IntN(4) { // a few writes at once, often in one batch
			student := fmt.Sprintf("s%02d", rng.IntN(16))
			op := rng.IntN(10)
			name := names[rng.IntN(len(names))]
			answered := rng.IntN(1000)
			wg.Go(func() {
				switch {
				case op < 3:
					start(t, e, student, name)
				case op < 8:
					if e.db.Update(context.Background(), func(tx *store.Tx) error {
						s, err := tx.Reader().Session(context.Background(), "x", student)
						if err != nil {
							return err
						}
						tx.TouchRows(listKey, s.ID)
						return tx.Heartbeat("x", student, 1, answered, "")
					}) != nil {
						return // no such session yet
					}
				case op < 9:
					e.db.Update(context.Background(), func(tx *store.Tx) error {
						s, err := tx.Reader().Session(context.Background(), "x", student)
						if err != nil {
							return err
						}
						tx.TouchRows(listKey, s.ID)
						return tx.DeleteSession("x", student)
					})
				default:
					e.write(t, func(tx *store.Tx) error { tx.Touch(listKey); return nil })
				}
			})
			alive[student] = true
		}
		wg.Wait()
		e.settle(t)
		for _, s := range shapes {
			if diff := cmp.Diff(e.get(t, "sessions", s), recs[s].list()); diff != "" {
				t.Fatalf("step %d, list %s (-current +rebuilt):\n%s", step, s, diff)
			}
		}
	}
	late := newRecorder()
	e.subscribe(t, "sessions", shapes[3], late)
	if diff := cmp.Diff(e.get(t, "sessions", shapes[3]), late.list()); diff != "" {
		t.Fatalf("late subscriber (-current +held):\n%s", diff)
	}
	st := e.Stats()
	t.Logf("%d patch runs (%d rows), %d whole runs", st.PatchRuns, st.RowsPatched, st.FullRuns)
	if st.PatchRuns == 0 {
		t.Fatal("no run was a patch")
	}
}

// TestDeltaMerge: merging two consecutive deltas takes a holder of the
// first one's start to the second one's end.
func TestDeltaMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	type state struct {
		rows  map[string]string
		order []string
	}
	apply := func(s state, d *engine.Delta) state {
		out := state{rows: map[string]string{}, order: slices.Clone(s.order)}
		for k, v := range s.rows {
			out.rows[k] = v
		}
		for _, id := range d.Remove {
			delete(out.rows, id)
			out.order = slices.DeleteFunc(out.order, func(x string) bool { return x == id })
		}
		for _, r := range d.Upsert {
			out.rows[r.ID] = string(r.Raw)
		}
		if d.Order != nil {
			out.order = slices.Clone(d.Order)
		}
		return out
	}
	// next makes a random successor state and the delta to it.
	next := func(s state, v int) (state, *engine.Delta) {
		ids := slices.Clone(s.order)
		n := state{rows: map[string]string{}}
		d := &engine.Delta{}
		for _, id := range ids {
			switch rng.IntN(5) {
			case 0:
				d.Remove = append(d.Remove, id)
				continue
			case 1:
				n.rows[id] = fmt.Sprintf(`"%s@%d"`, id, v)
				d.Upsert = append(d.Upsert, engine.RowJSON{ID: id, Raw: json.RawMessage(n.rows[id])})
			default:
				n.rows[id] = s.rows[id]
			}
			n.order = append(n.order, id)
		}
		moved := false
		for range rng.IntN(3) {
			id := fmt.Sprintf("r%d", rng.IntN(12))
			if _, ok := n.rows[id]; ok || slices.Contains(d.Remove, id) {
				continue
			}
			n.rows[id] = fmt.Sprintf(`"%s@%d"`, id, v)
			d.Upsert = append(d.Upsert, engine.RowJSON{ID: id, Raw: json.RawMessage(n.rows[id])})
			n.order = slices.Insert(n.order, rng.IntN(len(n.order)+1), id)
			moved = true
		}
		if rng.IntN(4) == 0 && len(n.order) > 1 {
			rng.Shuffle(len(n.order), func(i, j int) { n.order[i], n.order[j] = n.order[j], n.order[i] })
			moved = true
		}
		if moved {
			d.Order = slices.Clone(n.order)
		}
		return n, d
	}
	for trial := range 500 {
		s0 := state{rows: map[string]string{}}
		for i := range rng.IntN(8) {
			id := fmt.Sprintf("r%d", i)
			s0.rows[id] = `"` + id + `"`
			s0.order = append(s0.order, id)
		}
		s1, d1 := next(s0, 1)
		s2, d2 := next(s1, 2)
		if got := apply(apply(s0, d1), d2); !cmp.Equal(got, s2, cmp.AllowUnexported(state{}), cmpopts.EquateEmpty()) {
			t.Fatalf("trial %d: the generator is wrong", trial)
		}
		merged := &engine.Delta{Upsert: slices.Clone(d1.Upsert), Remove: slices.Clone(d1.Remove), Order: slices.Clone(d1.Order)}
		merged.Merge(d2)
		got := apply(s0, merged)
		if diff := cmp.Diff(s2, got, cmp.AllowUnexported(state{}), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("trial %d: merged delta (-want +got):\n%s\nd1=%+v\nd2=%+v", trial, diff, d1, d2)
		}
	}
}

// TestSubscriptionKeepsNormalisedArguments: a subscription keeps the
// arguments its query read, not what the client sent (unknown fields, here
// 60 KB of them, are dropped).
func TestSubscriptionKeepsNormalisedArguments(t *testing.T) {
	e := newEngine(t)
	e.Query("args", engine.Query{Prepare: func(_ context.Context, _ engine.Caller, raw json.RawMessage) (engine.Plan, error) {
		var a struct {
			ID string `json:"id"`
		}
		if err := args.Decode(raw, &a); err != nil {
			return engine.Plan{}, err
		}
		return engine.Plan{Args: a, Share: a.ID, Run: func(context.Context) (any, error) { return a.ID, nil }}, nil
	}})
	raw := `{"id":"x","junk":"` + strings.Repeat("j", 60_000) + `"}`
	sub := e.subscribe(t, "args", raw, newRecorder())
	if got := string(sub.Args()); got != `{"id":"x"}` {
		t.Fatalf("kept arguments: %.60s", got)
	}
}
