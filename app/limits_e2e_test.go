package app_test

// The limits that keep one user from growing the server without bound
// (issue 12), each with its error code.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"invigil/app/apptest"
	"invigil/app/proctoring"
)

// TestSocketsPerUser: the 11th socket of one user is refused with
// rate_limited and closed with "try again later"; the others work, and a
// slot frees when one closes.
func TestSocketsPerUser(t *testing.T) {
	h := bootWithExams(t)
	var open []*apptest.WS
	for range 10 {
		open = append(open, h.DialAs(tutor1))
	}
	extra := h.Dial(nil)
	extra.Send(map[string]string{"type": "auth", "token": h.Token(tutor1)})
	f := extra.Next()
	if f.Type != "error" || f.Code != "rate_limited" || f.RetryAfterMs <= 0 {
		t.Fatalf("the 11th socket: want rate_limited with retry_after_ms, got %+v", f)
	}
	waitClosed(t, extra)
	open[0].Conn.Close()
	waitFor(t, func() bool {
		w := h.Dial(nil)
		defer w.Conn.Close()
		w.Send(map[string]string{"type": "auth", "token": h.Token(tutor1)})
		return w.Next().Type == "authed"
	})
	pingPong(t, open[9])
}

// TestCloseCodeSaysWhenToComeBack: the refused socket's close frame is
// 1013 with retry_after_ms, which invigil.js honours.
func TestCloseCodeSaysWhenToComeBack(t *testing.T) {
	h := bootWithExams(t)
	for range 10 {
		h.DialAs(student1)
	}
	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteJSON(map[string]string{"type": "auth", "token": h.Token(student1)})
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != websocket.CloseTryAgainLater || !strings.HasPrefix(ce.Text, "retry_after_ms=") {
			t.Fatalf("want close 1013 retry_after_ms=…, got %v", err)
		}
		return
	}
}

// TestSubscribeAndQueryRate: subscriptions and HTTP queries share a budget
// per user (a burst of 200, then 20 a second): past it, rate_limited with
// retry_after_ms, and nothing is subscribed.
func TestSubscribeAndQueryRate(t *testing.T) {
	h := bootWithExams(t)
	a, b := h.DialAs(tutor1), h.DialAs(tutor1)
	e1 := map[string]string{"exam_id": "e1"}
	for i := range 200 {
		w := a
		if i%2 == 1 {
			w = b
		}
		w.Send(map[string]any{"type": "sub", "id": fmt.Sprint("q", i), "query": "proctoring.getExamSessions", "args": e1})
	}
	for i := range 200 {
		w := a
		if i%2 == 1 {
			w = b
		}
		if f := w.Next(); f.Type != "data" {
			t.Fatalf("sub %d within the burst: %+v", i, f)
		}
	}
	a.Send(map[string]any{"type": "sub", "id": "over", "query": "proctoring.getExamSessions", "args": e1})
	if f := a.Next(); f.Type != "error" || f.ID != "over" || f.Code != "rate_limited" || f.RetryAfterMs <= 0 {
		t.Fatalf("the 201st subscription: want rate_limited, got %+v", f)
	}
	code, body := h.Query(tutor1, "proctoring.getExamSessions", e1)
	if code != http.StatusTooManyRequests || !strings.Contains(body, "rate_limited") {
		t.Fatalf("an HTTP query past the budget: want 429, got %d %s", code, body)
	}
	h.Advance(time.Second) // 20 more
	if code, _ := h.Query(tutor1, "proctoring.getExamSessions", e1); code != http.StatusOK {
		t.Fatalf("after a second: want 200, got %d", code)
	}
	if n := h.App.Engine.Stats().Subscriptions; n != 200 {
		t.Fatalf("subscriptions: want 200, got %d", n)
	}
}

// TestViolationsPerMinute: a flood of violations keeps the count exact but
// stores at most 60 rows a minute for the stream.
func TestViolationsPerMinute(t *testing.T) {
	h := bootWithExams(t)
	s := h.DialAs(student1)
	mustResult(t, s.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	for range 70 {
		mustResult(t, s.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "window_blur"}))
		h.Advance(200 * time.Millisecond)
	}
	_, body := h.Query(tutor1, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": student1.ID})
	var d proctoring.SessionDetail
	json.Unmarshal([]byte(body), &d)
	if d.ViolationCount != 70 || len(d.Violations) != 60 {
		t.Fatalf("want 70 counted and 60 stored, got %d counted and %d stored", d.ViolationCount, len(d.Violations))
	}
	h.Advance(time.Minute)
	mustResult(t, s.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "copy"}))
	_, body = h.Query(tutor1, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": student1.ID})
	json.Unmarshal([]byte(body), &d)
	if d.ViolationCount != 71 || len(d.Violations) != 61 {
		t.Fatalf("a minute later: want 71 counted and 61 stored, got %d and %d", d.ViolationCount, len(d.Violations))
	}
}
