package app_test

// Tests for the defects the core's adversarial review found (issue 6), each
// over the real wiring: sockets on loopback, the real store and engine.

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
)

// smallReadBufferDialer makes a client whose kernel receive buffer is tiny,
// so that a server writing to it fills its own buffers quickly.
var smallReadBufferDialer = &websocket.Dialer{
	NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(4096)
		}
		return c, err
	},
	ReadBufferSize: 1024,
}

// TestSlowSocketRacingExpiryAndClose: a socket that stops reading overflows
// its send queue while its token expires and while it closes. Whatever the
// interleaving, nothing may lock up: an unrelated subscriber of the same
// shared query keeps getting every change.
func TestSlowSocketRacingExpiryAndClose(t *testing.T) {
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) {
		c.SendQueueBytes = 32 << 10
		c.ViolationDetailCap = 1 << 20
		c.ViolationsPerMinute = 1 << 20
	}))
	good := h.Dial(nil)
	good.Send(map[string]string{"type": "auth", "token": h.TokenTTL(tutor1, 1000*time.Hour)})
	if f := good.Next(); f.Type != "authed" {
		t.Fatalf("auth: %+v", f)
	}
	e1 := map[string]any{"exam_id": "e1", "limit": 500}
	good.Sub("g1", "proctoring.getViolations", e1)
	student := h.DialAs(student1)
	mustResult(t, student.Call("proctoring.startSession", e1))

	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	ctx := t.Context()
	as := engine.Caller{User: student1}
	violation := json.RawMessage(`{"exam_id":"e1","type":"copy","detail":"` + strings.Repeat("x", 1000) + `"}`)
	for round := range 12 {
		var slows []*websocket.Conn
		for range 6 {
			slow, _, err := smallReadBufferDialer.Dial(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			slow.WriteJSON(map[string]any{"type": "auth", "token": h.TokenTTL(tutor1, time.Minute)})
			slow.WriteJSON(map[string]any{"type": "sub", "id": "s1", "query": "proctoring.getViolations", "args": e1})
			slow.WriteJSON(map[string]any{"type": "sub", "id": "s2", "query": "proctoring.getExamSessions", "args": e1})
			slows = append(slows, slow)
		}
		var wg sync.WaitGroup
		for range 4 { // writers: every write grows the slow sockets' frames
			wg.Go(func() {
				for range 30 {
					if _, err := h.App.Engine.Call(ctx, as, "proctoring.logViolation", violation); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Go(func() { // the slow sockets' tokens expire meanwhile
			time.Sleep(time.Duration(round) * 2 * time.Millisecond)
			h.Advance(time.Minute + time.Second)
		})
		for i, slow := range slows { // and they go away meanwhile
			wg.Go(func() {
				time.Sleep(time.Duration(round+i) * 3 * time.Millisecond)
				slow.Close()
			})
		}
		wg.Wait()

		// The unrelated subscriber still sees the next change.
		marker := `"detail":"round-` + string(rune('a'+round)) + `"`
		raw := json.RawMessage(`{"exam_id":"e1","type":"paste",` + marker + `}`)
		if _, err := h.App.Engine.Call(ctx, as, "proctoring.logViolation", raw); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(10 * time.Second)
		for seen := false; !seen; {
			select {
			case f := <-good.Frames:
				if f.Type != "data" && f.Type != "delta" {
					t.Fatalf("good subscriber got %+v", f)
				}
				seen = strings.Contains(string(f.Value), marker) || strings.Contains(f.Raw, marker)
			case <-deadline:
				closed := false
				select {
				case <-good.Closed:
					closed = true
				default:
				}
				code, body := h.Query(tutor1, "proctoring.getViolations", map[string]any{"exam_id": "e1", "limit": 500})
				t.Fatalf("round %d: the unrelated subscriber stopped getting data (deadlock?) closed=%v stats=%+v http=%d has marker=%v", round, closed, h.App.Engine.Stats(), code, strings.Contains(body, marker))
			}
		}
	}
}

// TestReauthWithNewRoleRechecksSubscriptions: every right is judged on the
// current token (CONTRACT §2): after a re-auth whose role changed, each live
// subscription is authorized again and ends with forbidden if it may no
// longer be seen; one that may still be seen goes on.
func TestReauthWithNewRoleRechecksSubscriptions(t *testing.T) {
	h := bootWithExams(t)
	w := h.DialAs(admin)
	e1 := map[string]string{"exam_id": "e1"}
	w.Sub("q1", "proctoring.getExamSessions", e1)
	w.Sub("q2", "proctoring.getViolations", e1)

	// The admin is made a tutor of e1 only: still allowed, nothing ends.
	asTutor := identity.User{ID: admin.ID, Role: identity.Tutor, Name: admin.Name}
	h.Exam(exam.Registration{ExamID: "e1", Title: "Exam one", TutorIDs: []string{tutor1.ID, admin.ID}, Status: exam.Open})
	w.Send(map[string]string{"type": "auth", "token": h.Token(asTutor)})
	if f := w.Next(); f.Type != "authed" || f.User.Role != identity.Tutor {
		t.Fatalf("re-auth as tutor: %+v", f)
	}
	if got := w.Quiet(200 * time.Millisecond); len(got) > 0 {
		t.Fatalf("a role change that keeps the right ended or re-sent subscriptions: %+v", got)
	}

	// Demoted to student: both subscriptions end with forbidden.
	asStudent := identity.User{ID: admin.ID, Role: identity.Student, Name: admin.Name}
	w.Send(map[string]string{"type": "auth", "token": h.Token(asStudent)})
	if f := w.Next(); f.Type != "authed" || f.User.Role != identity.Student {
		t.Fatalf("re-auth as student: %+v", f)
	}
	ended := map[string]string{}
	for range 2 {
		f := w.Next()
		if f.Type != "error" {
			t.Fatalf("want forbidden for each subscription, got %+v", f)
		}
		ended[f.ID] = f.Code
	}
	if ended["q1"] != "forbidden" || ended["q2"] != "forbidden" {
		t.Fatalf("ended: %v", ended)
	}
	student := h.DialAs(student1)
	mustResult(t, student.Call("proctoring.startSession", e1))
	if leaked := w.Quiet(150 * time.Millisecond); len(leaked) > 0 {
		t.Fatalf("the demoted user still receives frames: %+v", leaked)
	}
}

// TestOlderExamHookChangesNothing: retried hooks arrive out of order; with
// updated_at, a delivery older than the one applied changes nothing.
func TestOlderExamHookChangesNothing(t *testing.T) {
	h := apptest.Boot(t)
	t0 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	post := func(id, status string, at time.Time) {
		t.Helper()
		code, body := h.Hook("/hooks/exams", id, map[string]any{
			"exam_id": "o1", "title": "Ordered", "tutor_ids": []string{tutor1.ID}, "status": status,
			"updated_at": at.Format(time.RFC3339Nano),
		})
		if code != http.StatusOK {
			t.Fatalf("hook %s: %d %s", id, code, body)
		}
	}
	post("m1", exam.Open, t0)
	post("m3", exam.Closed, t0.Add(2*time.Minute))
	post("m2", exam.Open, t0.Add(time.Minute)) // a retry of an older edit arrives late
	if got := readExam(t, h, "o1"); got == nil || got.Status != exam.Closed {
		t.Fatalf("an older delivery reopened the exam: %+v", got)
	}
	if code, body := h.Call(student1, "proctoring.startSession", map[string]string{"exam_id": "o1"}); code != http.StatusConflict {
		t.Fatalf("startSession on the closed exam: want 409, got %d %s", code, body)
	}
	// Without updated_at a delivery applies as before; a newer one applies.
	post("m4", exam.Open, t0.Add(3*time.Minute))
	if got := readExam(t, h, "o1"); got.Status != exam.Open {
		t.Fatalf("a newer delivery did not apply: %+v", got)
	}
}

// TestHeartbeatRightAfterStartSession: startSession marks the student alive
// but is no heartbeat for INVIGIL_HEARTBEAT_MIN_INTERVAL (CONTRACT §4).
func TestHeartbeatRightAfterStartSession(t *testing.T) {
	h := bootWithExams(t)
	w := h.DialAs(student1)
	mustResult(t, w.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	hb := map[string]any{"exam_id": "e1", "current_question": 1, "answered_count": 0}
	mustResult(t, w.Call("proctoring.heartbeat", hb))
	if f := w.Call("proctoring.heartbeat", hb); f.Type != "error" || f.Code != "rate_limited" || f.RetryAfterMs <= 0 {
		t.Fatalf("the second heartbeat at once: want rate_limited with retry_after_ms, got %+v", f)
	}
	// A reload (startSession again) does not reset the heartbeat limit either.
	mustResult(t, w.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	if f := w.Call("proctoring.heartbeat", hb); f.Code != "rate_limited" {
		t.Fatalf("after a reload: want rate_limited, got %+v", f)
	}
}

// panicky registers functions and queries that panic, as a bug would.
func panicky(a *app.App) {
	e := a.Engine
	e.Func("test.panic", func(context.Context, engine.Caller, json.RawMessage) (any, error) { panic("boom in a call") })
	e.Query("test.panicFirst", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		return engine.Plan{Share: "x", Run: func(context.Context) (any, error) { panic("boom in a first run") }}, nil
	}})
	// Runs fine until exam e2 is registered again, then panics on re-run.
	e.Query("test.panicLater", engine.Query{Prepare: func(context.Context, engine.Caller, json.RawMessage) (engine.Plan, error) {
		return engine.Plan{Keys: []string{exam.Key("e2")}, Share: "y", Run: func(ctx context.Context) (any, error) {
			ex, err := a.Exams.Get(ctx, "e2")
			if err != nil {
				return nil, err
			}
			if ex.Title != "Exam two" {
				panic("boom in a re-run")
			}
			return ex.Title, nil
		}}, nil
	}})
}

// TestPanicsEndOnlyTheirCaller: a panic while serving one call or one
// subscription ends only that call or subscription with internal; the
// socket, the engine and the process go on, and a socket's close still
// reaches the features (its student shows disconnected).
func TestPanicsEndOnlyTheirCaller(t *testing.T) {
	h := bootWithExams(t, apptest.WithSetup(panicky))
	tutor := h.DialAs(tutor1)
	tutor.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	student := h.DialAs(student1)
	mustResult(t, student.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	oneData(t, tutor, "q1")

	if f := student.Call("test.panic", map[string]string{}); f.Type != "error" || f.Code != "internal" {
		t.Fatalf("panicking call: want internal, got %+v", f)
	}
	student.Send(map[string]any{"type": "sub", "id": "p1", "query": "test.panicFirst", "args": map[string]string{}})
	wantError(t, student.Next(), "p1", "internal")
	student.Sub("p2", "test.panicLater", map[string]string{})
	h.Exam(exam.Registration{ExamID: "e2", Title: "Renamed", TutorIDs: []string{tutor2.ID}, Status: exam.Open})
	wantError(t, student.Next(), "p2", "internal")

	// The student's socket still works, and so does everyone else's.
	pingPong(t, student)
	h.Advance(10 * time.Second)
	mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 2, "answered_count": 1}))
	if s := sessions(t, oneData(t, tutor, "q1")); s[0].CurrentQuestion != 2 {
		t.Fatalf("after the panics: %+v", s)
	}
	// Its close still reaches proctoring.
	student.Conn.Close()
	if s := sessions(t, oneData(t, tutor, "q1")); s[0].Status != "disconnected" {
		t.Fatalf("after the panicking socket closed: %+v", s)
	}
}

// TestSlowAndIdleClientsAreCut: a client that never finishes its headers
// (slowloris), or keeps a connection open without using it, does not hold
// a socket for ever.
func TestSlowAndIdleClientsAreCut(t *testing.T) {
	h := apptest.Boot(t, apptest.WithConfig(func(c *app.Config) {
		c.ReadHeaderTimeout = 300 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	}))
	addr := strings.TrimPrefix(h.URL, "http://")
	cases := []struct {
		name string
		send string
	}{
		{"headers never finish", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "},
		{"kept alive and idle", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte(c.send)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := conn.Read(buf); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatalf("the server kept the connection open for 5 s")
					}
					break // closed by the server
				}
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("closed after %v", took)
			}
		})
	}
}

// TestDemoBootsThroughTheSharedWiring: --demo is the same wiring as
// production plus the demo: its sign-in issues tokens, its exam is
// registered and its simulated students join it.
func TestDemoBootsThroughTheSharedWiring(t *testing.T) {
	h := apptest.Boot(t, apptest.WithDemo(3))
	token := h.DemoToken("tutor-1", "tutor")
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.Advance(2 * time.Second)
		code, body := postAs(h, "/api/query/proctoring.getExamSessions", token, []byte(`{"exam_id":"demo"}`))
		if code != http.StatusOK {
			t.Fatalf("getExamSessions as the demo tutor: %d %s", code, body)
		}
		var rows []map[string]any
		json.Unmarshal([]byte(body), &rows)
		if len(rows) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the simulated students never all joined: %s", body)
		}
	}
	if code, _ := h.Post("/hooks/exams", nil, []byte(`{}`)); code != http.StatusUnauthorized {
		t.Fatalf("an unsigned hook in --demo: want 401, got %d", code)
	}
}
