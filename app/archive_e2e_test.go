package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app"
	"invigil/app/apptest"
)

// A submitted session's summary reaches Supabase REST exactly as the
// contract's proctoring_summaries row, through the outbox.
func TestSubmitArchivesASummary(t *testing.T) {
	var got []map[string]any
	supabase := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/rest/v1/proctoring_summaries" || r.URL.Query().Get("on_conflict") != "exam_id,student_id" ||
			r.Header.Get("apikey") != "srk" || r.Header.Get("Authorization") != "Bearer srk" {
			t.Errorf("unexpected request %s %v", r.URL, r.Header)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("body: %s", b)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer supabase.Close()
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) {
		c.SupabaseURL, c.ServiceRoleKey = supabase.URL, "srk"
	}))
	s := h.DialAs(student1)
	mustResult(t, s.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	for _, typ := range []string{"tab_hidden", "paste", "tab_hidden"} {
		mustResult(t, s.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": typ}))
	}
	s.Conn.Close() // one disconnect
	waitStatus(t, h, "disconnected")
	s = h.DialAs(student1)
	h.Advance(90 * time.Second)
	mustResult(t, s.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 2, "answered_count": 2}))
	mustResult(t, s.Call("proctoring.endSession", map[string]string{"exam_id": "e1"}))

	if n, err := h.App.Archive.DeliverDue(t.Context()); err != nil || n != 1 {
		t.Fatalf("deliver: %d, %v", n, err)
	}
	start := "2026-03-02T09:00:00.000Z"
	end := "2026-03-02T09:01:30.000Z"
	want := []map[string]any{{
		"exam_id": "e1", "student_id": student1.ID, "status": "submitted",
		"started_at": start, "ended_at": end, "duration_s": 90.0,
		"violation_count": 3.0, "violations_by_type": map[string]any{"tab_hidden": 2.0, "paste": 1.0},
		"disconnects": 1.0,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("summary sent to Supabase (-want +got):\n%s", diff)
	}
}

func waitStatus(t *testing.T, h *apptest.Harness, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_, body := h.Query(tutor1, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
		if rows := sessions(t, json.RawMessage(body)); len(rows) == 1 && rows[0].Status == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("session never became %s", want)
}
