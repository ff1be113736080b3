package supabase_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"invigil/app/apptest"
	"invigil/app/exam"
)

// TestPushScoreReachesTheLeaderboard is grade-exam's half of the kids'
// leaderboard for real: pushScore from functions/_shared/invigil.ts, under
// Deno, against a running invigil (the whole wiring on a loopback port,
// real clock), while a token-less socket watches leaderboard.getLeaderboard
// as the projector does. The entry arrives on the socket within 3 s of the
// push; the same push again (grade-exam retried), or a re-grade, changes
// nothing.
func TestPushScoreReachesTheLeaderboard(t *testing.T) {
	deno(t) // skips loudly, or fails under INVIGIL_REQUIRE_PG_DENO
	h := apptest.Boot(t, apptest.WithRealClock())
	h.Exam(exam.Registration{ExamID: "e1", Title: "Algebra", TutorIDs: []string{"t1"}, QuizCode: "DEMO42", Status: exam.Open})

	ws := h.Dial(nil)
	ws.Send(map[string]any{"type": "sub", "id": "board", "query": "leaderboard.getLeaderboard",
		"args": map[string]any{"quiz_code": "DEMO42"}, "deltas": true})
	view := &apptest.View{}
	if err := view.Apply(ws.Next()); err != nil {
		t.Fatal(err)
	}

	submitted := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	score := func(points float64) string {
		return fmt.Sprintf(`{"submission_id":"sub-1","exam_id":"e1","quiz_code":"DEMO42","nickname":"Zoë 🎓","score":%v,"max_score":10,"submitted_at":%q}`,
			points, submitted.Format(time.RFC3339Nano))
	}
	push := func(body string) string {
		t.Helper()
		out := runDeno(t, `[{"fn":"pushScore","arg":`+body+`}]`, "run", "--no-config", "--no-prompt",
			"--allow-net=127.0.0.1", "testdata/push.ts", h.URL, apptest.HookSecret)
		var outcomes []string
		if err := json.Unmarshal(out, &outcomes); err != nil || len(outcomes) != 1 {
			t.Fatalf("push.ts printed %q: %v", out, err)
		}
		return outcomes[0]
	}

	// The push runs while the socket waits: the clock starts before Deno
	// does, so the time measured includes its start.
	start := time.Now()
	pushed := make(chan string, 1)
	go func() { pushed <- push(score(9.5)) }()
	select {
	case f := <-ws.Frames:
		took := time.Since(start)
		if err := view.Apply(f); err != nil {
			t.Fatalf("%v: %s", err, f.Raw)
		}
		t.Logf("pushScore under Deno → %s frame on the board's socket: %s", f.Type, took.Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Fatalf("no frame on the board within 3 s of pushScore (Deno: %v)", <-pushed)
	}
	if got := <-pushed; got != "ok" {
		t.Fatalf("pushScore: %s", got)
	}
	var rows []map[string]any
	if err := json.Unmarshal(view.JSON(), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("board: %s", view.JSON())
	}
	id, _ := rows[0]["_id"].(string)
	want := map[string]any{"_id": id, "rank": 1.0, "nickname": "Zoë 🎓", "score": 9.5, "max_score": 10.0,
		"percentage": 95.0, "submitted_at": submitted.Format("2006-01-02T15:04:05.000000Z07:00")}
	if diff := gocmp.Diff(want, rows[0]); diff != "" || id == "" || id == "sub-1" {
		t.Fatalf("the row (-want +got):\n%s", diff)
	}

	// grade-exam sends it again: the same webhook id, nothing changes.
	if got := push(score(9.5)); got != "ok" {
		t.Fatalf("the same pushScore again: %s", got)
	}
	// A re-grade pushed for the same submission carries the same webhook id
	// (score_<submission_id>): a replay, answered 200, the first score stands.
	// (Under a new id it is a conflict: app's TestScoreHooks.)
	if got := push(score(10)); got != "ok" {
		t.Fatalf("a re-grade of sub-1: %s", got)
	}
	if frames := ws.Quiet(300 * time.Millisecond); len(frames) != 0 {
		t.Fatalf("a repeat changed the board: %+v", frames)
	}
	if n, err := h.App.DB.LeaderboardCount(t.Context(), "DEMO42"); err != nil || n != 1 {
		t.Fatalf("%d entries (%v), want 1", n, err)
	}
}
