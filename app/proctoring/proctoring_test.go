package proctoring_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/proctoring"
	"invigil/store"
	"invigil/store/storetest"
)

// These tests drive the feature through the engine, with no socket: a
// connection is only a number here.

var ann = identity.User{ID: "ann", Role: identity.Student, Name: "Ann"}

func setup(t *testing.T) (*engine.Engine, *store.DB, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	reg := exam.NewRegistry(db)
	proctoring.New(db, reg, proctoring.Config{}).Register(e)
	if err := reg.Register(context.Background(), exam.Registration{ExamID: "e1", Title: "E1", TutorIDs: []string{}, Status: exam.Open}); err != nil {
		t.Fatal(err)
	}
	return e, db, clock
}

func call(t *testing.T, e *engine.Engine, conn uint64, fn string, args any) (proctoring.SessionView, error) {
	t.Helper()
	raw, _ := json.Marshal(args)
	v, err := e.Call(context.Background(), engine.Caller{User: ann, Conn: conn}, fn, raw)
	if err != nil {
		return proctoring.SessionView{}, err
	}
	s, _ := v.(proctoring.SessionView)
	return s, nil
}

func status(t *testing.T, db *store.DB) string {
	t.Helper()
	s, err := db.Session(context.Background(), "e1", ann.ID)
	if err != nil {
		t.Fatal(err)
	}
	return s.Status
}

func TestLastTabClosingDisconnects(t *testing.T) {
	e, db, _ := setup(t)
	first, err := call(t, e, 1, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := call(t, e, 2, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != second.ID {
		t.Fatalf("a second tab got a new session: %s then %s", first.ID, second.ID)
	}
	e.ConnClosed(1)
	if got := status(t, db); got != "active" {
		t.Fatalf("one of two tabs closed: want active, got %s", got)
	}
	e.ConnClosed(2)
	if got := status(t, db); got != "disconnected" {
		t.Fatalf("last tab closed: want disconnected, got %s", got)
	}
	if _, err := call(t, e, 3, "proctoring.startSession", map[string]string{"exam_id": "e1"}); err != nil {
		t.Fatal(err)
	}
	if got := status(t, db); got != "active" {
		t.Fatalf("rejoined: want active, got %s", got)
	}
}

func TestSubmittedSessionStaysSubmitted(t *testing.T) {
	e, db, clock := setup(t)
	call(t, e, 1, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	if _, err := call(t, e, 1, "proctoring.endSession", map[string]string{"exam_id": "e1"}); err != nil {
		t.Fatal(err)
	}
	e.ConnClosed(1) // closing the tab after submitting is not a disconnect
	if got := status(t, db); got != "submitted" {
		t.Fatalf("want submitted, got %s", got)
	}
	clock.Advance(time.Minute)
	for _, fn := range []string{"proctoring.startSession", "proctoring.endSession", "proctoring.heartbeat"} {
		_, err := call(t, e, 2, fn, map[string]any{"exam_id": "e1", "current_question": 1, "answered_count": 1})
		if apperr.CodeOf(err) != apperr.Conflict {
			t.Fatalf("%s after submit: want conflict, got %v", fn, err)
		}
	}
}

func TestHTTPHeartbeatsAreNotTiedToASocket(t *testing.T) {
	e, db, _ := setup(t)
	call(t, e, 0, "proctoring.startSession", map[string]string{"exam_id": "e1"})
	e.ConnClosed(0) // conn 0 is plain HTTP: nothing to close
	if got := status(t, db); got != "active" {
		t.Fatalf("want active, got %s", got)
	}
}

// TestReloadNeverLeavesSessionDisconnected: a reload opens a new socket
// that starts the session while the old socket's close is being handled;
// whatever the interleaving, the session ends active (the close of a
// socket that is no longer the last to carry the session changes nothing).
func TestReloadNeverLeavesSessionDisconnected(t *testing.T) {
	e, db, _ := setup(t)
	conn := uint64(1)
	if _, err := call(t, e, conn, "proctoring.startSession", map[string]string{"exam_id": "e1"}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		old, next := conn, conn+1
		conn = next
		var wg sync.WaitGroup
		wg.Go(func() { e.ConnClosed(old) })
		wg.Go(func() {
			if _, err := call(t, e, next, "proctoring.startSession", map[string]string{"exam_id": "e1"}); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		if got := status(t, db); got != "active" {
			t.Fatalf("reload %d: the new tab carries the session, but it shows %s", i, got)
		}
	}
}

// TestBusyWriterRefusesHeartbeatsOnly: past the writer's capacity a
// heartbeat is refused at once with a time to come back and changes
// nothing, other writes still go through, and the student whose socket is
// alive is not disconnected for the heartbeats refused.
func TestBusyWriterRefusesHeartbeatsOnly(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{})
	t.Cleanup(e.Close)
	reg := exam.NewRegistry(db)
	var busy sync.Mutex
	isBusy := false
	svc := proctoring.New(db, reg, proctoring.Config{Busy: func() bool { busy.Lock(); defer busy.Unlock(); return isBusy }})
	svc.Register(e)
	if err := reg.Register(context.Background(), exam.Registration{ExamID: "e1", Title: "E1", TutorIDs: []string{}, Status: exam.Open}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, e, 1, "proctoring.startSession", map[string]string{"exam_id": "e1"}); err != nil {
		t.Fatal(err)
	}
	beat := map[string]any{"exam_id": "e1", "current_question": 4, "answered_count": 3}
	busy.Lock()
	isBusy = true
	busy.Unlock()
	for range 5 {
		clock.Advance(10 * time.Second)
		_, err := call(t, e, 1, "proctoring.heartbeat", beat)
		ae := apperr.As(err)
		if ae == nil || ae.Code != apperr.RateLimited || ae.RetryAfterMs < 1000 || ae.RetryAfterMs > 3000 {
			t.Fatalf("busy: want rate_limited with retry_after_ms in [1000, 3000], got %v", err)
		}
	}
	sess, err := db.Session(context.Background(), "e1", ann.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sess.AnsweredCount != 0 || sess.LastBeatAt != "" {
		t.Fatalf("a refused heartbeat changed the session: %+v", sess)
	}
	// Other writes are not refused.
	if _, err := call(t, e, 1, "proctoring.logViolation", map[string]string{"exam_id": "e1", "type": "tab_hidden"}); err != nil {
		t.Fatalf("busy: a violation was refused: %v", err)
	}
	// 50 s without an admitted heartbeat, but the socket is alive.
	if _, err := svc.SweepSilent(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := status(t, db); got != "active" {
		t.Fatalf("a student whose heartbeats were refused was marked %s", got)
	}
	busy.Lock()
	isBusy = false
	busy.Unlock()
	if _, err := call(t, e, 1, "proctoring.heartbeat", beat); err != nil {
		t.Fatalf("no longer busy: %v", err)
	}
	if sess, _ := db.Session(context.Background(), "e1", ann.ID); sess.AnsweredCount != 3 {
		t.Fatalf("the heartbeat after the storm was not recorded: %+v", sess)
	}
}
