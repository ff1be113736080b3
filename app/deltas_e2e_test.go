package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
)

// watcher is one tutor socket and what it holds for each subscription.
type watcher struct {
	name  string
	ws    *apptest.WS
	views map[string]*apptest.View
	query map[string]string // subscription id → query
	args  map[string]any
}

func watch(t *testing.T, h *apptest.Harness, name string, u identity.User, deltas bool) *watcher {
	t.Helper()
	w := &watcher{name: name, ws: h.DialAs(u), views: map[string]*apptest.View{}, query: map[string]string{}, args: map[string]any{}}
	subs := []struct {
		id, query string
		args      any
	}{
		{"grid", "proctoring.getExamSessions", map[string]any{"exam_id": "e1"}},
		{"stream", "proctoring.getViolations", map[string]any{"exam_id": "e1", "limit": 10}},
	}
	for _, s := range subs {
		w.ws.Send(map[string]any{"type": "sub", "id": s.id, "query": s.query, "args": s.args, "deltas": deltas})
		w.views[s.id], w.query[s.id], w.args[s.id] = &apptest.View{}, s.query, s.args
	}
	return w
}

// catchUp reads frames until every view equals what the query returns now.
func (w *watcher) catchUp(t *testing.T, h *apptest.Harness, step int, deltas bool) {
	t.Helper()
	want := map[string]any{}
	for id, q := range w.query {
		code, body := h.Query(tutor1, q, w.args[id])
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		want[id] = decodeAny(t, json.RawMessage(body))
	}
	deadline := time.After(5 * time.Second)
	for {
		same := true
		for id, v := range w.views {
			if !cmp.Equal(want[id], decodeAny(t, v.JSON())) {
				same = false
			}
		}
		if same {
			return
		}
		select {
		case f := <-w.ws.Frames:
			if f.Type == "delta" && !deltas {
				t.Fatalf("%s asked for no deltas but got one", w.name)
			}
			v := w.views[f.ID]
			if v == nil {
				t.Fatalf("%s: unexpected frame %s", w.name, f.Raw)
			}
			if err := v.Apply(f); err != nil {
				t.Fatalf("step %d, %s/%s: %v (%s)", step, w.name, f.ID, err, f.Raw)
			}
		case <-deadline:
			for id, v := range w.views {
				if diff := cmp.Diff(want[id], decodeAny(t, v.JSON())); diff != "" {
					t.Fatalf("step %d: %s/%s holds (-current +held):\n%s", step, w.name, id, diff)
				}
			}
		}
	}
}

func decodeAny(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	if raw == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// TestDeltaSubscribersHoldTheWhole is the property test of issue 7: random
// proctoring writes (starts, renames that move rows, heartbeats over the
// socket and HTTP, violations, disconnects, submits, exam reassignment)
// against tutors with and without deltas, and one that joins late; after
// each step every subscriber holds exactly what the query returns, in the
// documented order.
func TestDeltaSubscribersHoldTheWhole(t *testing.T) {
	h := bootWithExams(t)
	rng := rand.New(rand.NewPCG(2026, 12))
	withDeltas := watch(t, h, "deltas", tutor1, true)
	whole := watch(t, h, "whole", tutor1, false)
	watchers := []*watcher{withDeltas, whole}
	deltaOf := map[*watcher]bool{withDeltas: true, whole: false}

	students := make([]identity.User, 12)
	sockets := make([]*apptest.WS, len(students))
	names := []string{"Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hope"}
	for i := range students {
		students[i] = identity.User{ID: fmt.Sprintf("stu-%02d", i), Role: identity.Student, Name: names[i%len(names)]}
	}
	started := map[int]bool{}
	submitted := map[int]bool{}
	call := func(i int, fn string, args map[string]any) {
		if sockets[i] != nil && rng.IntN(4) > 0 {
			sockets[i].Call(fn, args)
			return
		}
		h.Call(students[i], fn, args) // over HTTP: no socket carries it
	}
	for step := range 120 {
		h.Advance(6 * time.Second) // past the heartbeat interval; HTTP-only students grow silent
		i := rng.IntN(len(students))
		e1 := map[string]any{"exam_id": "e1"}
		switch op := rng.IntN(10); {
		case op < 2 || !started[i]:
			if rng.IntN(3) == 0 { // a rename: the row moves in the grid
				students[i].Name = names[rng.IntN(len(names))] + fmt.Sprint(rng.IntN(9))
			}
			if sockets[i] == nil {
				sockets[i] = h.Dial(nil)
				sockets[i].Send(map[string]string{"type": "auth", "token": h.Token(students[i])})
				sockets[i].Next()
			}
			sockets[i].Call("proctoring.startSession", e1)
			started[i] = true
		case op < 5:
			call(i, "proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": rng.IntN(20), "answered_count": step})
		case op < 7:
			call(i, "proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "tab_hidden", "detail": fmt.Sprint("step ", step)})
		case op < 8:
			if sockets[i] != nil {
				sockets[i].Conn.Close() // shows disconnected
				sockets[i] = nil
			}
		case op < 9:
			if !submitted[i] {
				call(i, "proctoring.endSession", e1)
				submitted[i] = true
			}
		default:
			tutors := []string{tutor1.ID}
			if rng.IntN(2) == 0 {
				tutors = append(tutors, tutor2.ID)
			}
			h.Exam(exam.Registration{ExamID: "e1", Title: fmt.Sprint("Exam one, take ", step), TutorIDs: tutors, Status: exam.Open})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := h.App.Engine.Settle(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if step == 60 {
			late := watch(t, h, "late", admin, true)
			watchers = append(watchers, late)
			deltaOf[late] = true
		}
		for _, w := range watchers {
			w.catchUp(t, h, step, deltaOf[w])
		}
	}
	st := h.App.Engine.Stats()
	t.Logf("engine: %d patch runs (%d rows), %d whole runs", st.PatchRuns, st.RowsPatched, st.FullRuns)
	if st.PatchRuns == 0 {
		t.Fatal("no run was a row patch")
	}
}
