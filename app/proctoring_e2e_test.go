package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"invigil/app"

	"invigil/app/apptest"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/proctoring"
)

var (
	tutor1   = identity.User{ID: "tutor-1", Role: identity.Tutor, Name: "Tess Tutor"}
	tutor2   = identity.User{ID: "tutor-2", Role: identity.Tutor, Name: "Tom Tutor"}
	admin    = identity.User{ID: "admin-1", Role: identity.Admin, Name: "Ann Admin"}
	student1 = identity.User{ID: "student-1", Role: identity.Student, Name: "Sam Student"}
	student2 = identity.User{ID: "student-2", Role: identity.Student, Name: "Sue Student"}
)

// bootWithExams starts invigil with open exams e1 (tutor-1) and e2 (tutor-2).
func bootWithExams(t testing.TB, opts ...apptest.Option) *apptest.Harness {
	t.Helper()
	h := apptest.Boot(t, opts...)
	h.Exam(exam.Registration{ExamID: "e1", Title: "Exam one", TutorIDs: []string{tutor1.ID}, Status: exam.Open})
	h.Exam(exam.Registration{ExamID: "e2", Title: "Exam two", TutorIDs: []string{tutor2.ID}, Status: exam.Open})
	return h
}

func sessions(t *testing.T, raw json.RawMessage) []proctoring.SessionView {
	t.Helper()
	var out []proctoring.SessionView
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("decode sessions %s: %v", raw, err)
	}
	return out
}

// oneData waits for exactly one data frame for id and no other frame after it.
func oneData(t *testing.T, w *apptest.WS, id string) json.RawMessage {
	t.Helper()
	f := w.Next()
	if f.Type != "data" || f.ID != id {
		t.Fatalf("want one data frame for %s, got %+v", id, f)
	}
	if extra := w.Quiet(150 * time.Millisecond); len(extra) > 0 {
		t.Fatalf("want exactly one frame, got %d more: %+v", len(extra), extra)
	}
	return f.Value
}

func mustResult(t *testing.T, f apptest.Frame) json.RawMessage {
	t.Helper()
	if f.Type != "result" {
		t.Fatalf("call failed: %+v", f)
	}
	return f.Value
}

func TestTutorSeesEveryChangeOnce(t *testing.T) {
	h := bootWithExams(t)
	tutor := h.DialAs(tutor1)
	other := h.DialAs(tutor2)
	if got := sessions(t, tutor.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})); len(got) != 0 {
		t.Fatalf("first data: want no sessions, got %v", got)
	}
	other.Sub("q9", "proctoring.getExamSessions", map[string]string{"exam_id": "e2"})

	student := h.DialAs(student1)
	steps := []struct {
		name string
		act  func()
		want func(s proctoring.SessionView) bool
	}{
		{"start", func() { mustResult(t, student.Call("proctoring.startSession", map[string]string{"exam_id": "e1"})) },
			func(s proctoring.SessionView) bool { return s.Status == "active" && s.StudentName == student1.Name }},
		{"heartbeat", func() {
			h.Advance(10 * time.Second)
			mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 3, "answered_count": 2}))
		}, func(s proctoring.SessionView) bool { return s.CurrentQuestion == 3 && s.AnsweredCount == 2 }},
		{"violation", func() {
			mustResult(t, student.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "tab_hidden"}))
		}, func(s proctoring.SessionView) bool {
			return s.ViolationCount == 1 && s.LastViolation != nil && s.LastViolation.Type == "tab_hidden"
		}},
		{"socket closed", func() { student.Conn.Close() },
			func(s proctoring.SessionView) bool { return s.Status == "disconnected" }},
		{"back", func() {
			student = h.DialAs(student1)
			h.Advance(10 * time.Second)
			mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 4, "answered_count": 3}))
		}, func(s proctoring.SessionView) bool { return s.Status == "active" && s.CurrentQuestion == 4 }},
		{"submit", func() { mustResult(t, student.Call("proctoring.endSession", map[string]string{"exam_id": "e1"})) },
			func(s proctoring.SessionView) bool { return s.Status == "submitted" && s.EndedAt != nil }},
	}
	for _, step := range steps {
		step.act()
		got := sessions(t, oneData(t, tutor, "q1"))
		if len(got) != 1 || !step.want(got[0]) {
			t.Fatalf("after %s: got %+v", step.name, got)
		}
	}
	if leaked := other.Quiet(50 * time.Millisecond); len(leaked) > 0 {
		t.Fatalf("the other exam's tutor received %d frames: %+v", len(leaked), leaked)
	}
	// After submit, heartbeats are refused.
	h.Advance(10 * time.Second)
	if f := student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 4, "answered_count": 3}); f.Code != "conflict" {
		t.Fatalf("heartbeat after submit: want conflict, got %+v", f)
	}
}

func TestHeartbeatRateLimit(t *testing.T) {
	h := bootWithExams(t)
	s := h.DialAs(student1)
	mustResult(t, s.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	hb := map[string]any{"exam_id": "e1", "current_question": 0, "answered_count": 0}
	mustResult(t, s.Call("proctoring.heartbeat", hb)) // startSession is no heartbeat
	h.Advance(2 * time.Second)
	f := s.Call("proctoring.heartbeat", hb)
	if f.Code != "rate_limited" || f.RetryAfterMs < 2900 || f.RetryAfterMs > 3100 {
		t.Fatalf("heartbeat 2s after a heartbeat: want rate_limited with retry_after_ms≈3000, got %+v", f)
	}
	h.Advance(3 * time.Second)
	hb["network"] = map[string]any{"rtt_ms": 120, "downlink_mbps": 2.5, "effective_type": "3g"}
	mustResult(t, s.Call("proctoring.heartbeat", hb))

	// The tutor sees the last network report in the student's detail.
	_, body := h.Query(tutor1, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": student1.ID})
	var d struct {
		Network map[string]any `json:"network"`
	}
	json.Unmarshal([]byte(body), &d)
	want := map[string]any{"rtt_ms": 120.0, "downlink_mbps": 2.5, "effective_type": "3g"}
	if diff := cmp.Diff(want, d.Network); diff != "" {
		t.Fatalf("network in getSession (-want +got):\n%s", diff)
	}
}

func TestSilentHTTPStudentIsDisconnected(t *testing.T) {
	h := bootWithExams(t)
	if code, body := h.Call(student1, "proctoring.startSession", map[string]string{"exam_id": "e1"}); code != 200 {
		t.Fatalf("start over HTTP: %d %s", code, body)
	}
	// A student carried by a live socket is never swept, however quiet.
	sock := h.DialAs(student2)
	mustResult(t, sock.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))

	sweep := func() int {
		n, err := h.App.Proctoring.SweepSilent(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	h.Advance(24 * time.Second)
	if n := sweep(); n != 0 {
		t.Fatalf("after 24s of silence: want nobody disconnected, got %d", n)
	}
	h.Advance(2 * time.Second)
	if n := sweep(); n != 1 {
		t.Fatalf("after 26s of silence: want the HTTP student disconnected, got %d", n)
	}
	status := func(u identity.User) string {
		code, body := h.Query(tutor1, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": u.ID})
		if code != 200 {
			t.Fatalf("getSession: %d %s", code, body)
		}
		var s proctoring.SessionView
		json.Unmarshal([]byte(body), &s)
		return s.Status
	}
	if got := status(student1); got != "disconnected" {
		t.Fatalf("HTTP student: want disconnected, got %s", got)
	}
	if got := status(student2); got != "active" {
		t.Fatalf("socket student: want active, got %s", got)
	}
	// The next heartbeat brings them back.
	if code, body := h.Call(student1, "proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 1, "answered_count": 1}); code != 200 {
		t.Fatalf("heartbeat: %d %s", code, body)
	}
	if got := status(student1); got != "active" {
		t.Fatalf("after heartbeat: want active, got %s", got)
	}
}

func TestSilentSocketIsDisconnected(t *testing.T) {
	// melody's ping/pong runs on real time: a short DisconnectAfter keeps this quick.
	h := bootWithExams(t, apptest.WithRealClock(), apptest.WithConfig(func(c *app.Config) {
		c.DisconnectAfter = 600 * time.Millisecond
	}))
	tutor := h.DialAs(tutor1)
	tutor.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})

	// A client that writes but never reads never answers the server's pings.
	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	mute, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	mute.WriteJSON(map[string]string{"type": "auth", "token": h.Token(student1)})
	mute.WriteJSON(map[string]any{"type": "call", "id": "c1", "fn": "proctoring.startSession", "args": map[string]string{"exam_id": "e1"}})

	started := time.Now()
	for {
		got := sessions(t, tutor.Next().Value)
		if len(got) == 1 && got[0].Status == "disconnected" {
			break
		}
	}
	// The pong wait is 600 ms; allow the ping period on top.
	if took := time.Since(started); took > 2*time.Second {
		t.Fatalf("silent socket shown disconnected after %s", took)
	}
}

func TestViolationCapKeepsCountExact(t *testing.T) {
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) { c.ViolationDetailCap = 3 }))
	s := h.DialAs(student1)
	mustResult(t, s.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	for range 5 {
		mustResult(t, s.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "paste", "detail": "ctrl+v"}))
	}
	code, body := h.Query(tutor1, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": student1.ID})
	if code != 200 {
		t.Fatalf("getSession: %d %s", code, body)
	}
	var d proctoring.SessionDetail
	json.Unmarshal([]byte(body), &d)
	if d.ViolationCount != 5 || len(d.Violations) != 3 {
		t.Fatalf("want count 5 with 3 stored rows, got count %d with %d rows", d.ViolationCount, len(d.Violations))
	}
}

func TestAccessRules(t *testing.T) {
	h := bootWithExams(t)
	h.Exam(exam.Registration{ExamID: "listed", Title: "Listed", TutorIDs: []string{tutor1.ID}, Status: exam.Open, StudentIDs: &[]string{student1.ID}})
	h.Exam(exam.Registration{ExamID: "later", Title: "Later", TutorIDs: []string{tutor1.ID}, Status: exam.Scheduled})
	if code, body := h.Call(student1, "proctoring.startSession", map[string]string{"exam_id": "e1"}); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	cases := []struct {
		name     string
		do       func() (int, string)
		wantCode int
		wantErr  string
	}{
		{"student reads a dashboard", func() (int, string) {
			return h.Query(student1, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
		}, 403, "forbidden"},
		{"student reads another student's session", func() (int, string) {
			return h.Query(student2, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": student1.ID})
		}, 403, "forbidden"},
		{"tutor reads another tutor's exam", func() (int, string) {
			return h.Query(tutor2, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
		}, 403, "forbidden"},
		{"tutor reads another tutor's violations", func() (int, string) {
			return h.Query(tutor2, "proctoring.getViolations", map[string]string{"exam_id": "e1"})
		}, 403, "forbidden"},
		{"unknown exam", func() (int, string) {
			return h.Query(tutor1, "proctoring.getExamSessions", map[string]string{"exam_id": "nope"})
		}, 404, "not_found"},
		{"anonymous reads a dashboard", func() (int, string) {
			return h.Query(identity.User{}, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
		}, 401, "unauthenticated"},
		{"student writes without a session (not another's)", func() (int, string) {
			return h.Call(student2, "proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "copy"})
		}, 404, "not_found"},
		{"student joins an exam that does not list them", func() (int, string) {
			return h.Call(student2, "proctoring.startSession", map[string]string{"exam_id": "listed"})
		}, 403, "forbidden"},
		{"student joins an exam that is not open", func() (int, string) {
			return h.Call(student1, "proctoring.startSession", map[string]string{"exam_id": "later"})
		}, 409, "conflict"},
		{"tutor sits an exam", func() (int, string) {
			return h.Call(tutor1, "proctoring.startSession", map[string]string{"exam_id": "e1"})
		}, 403, "forbidden"},
		{"student joins an unknown exam", func() (int, string) {
			return h.Call(student1, "proctoring.startSession", map[string]string{"exam_id": "nope"})
		}, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := c.do()
			if code != c.wantCode || !strings.Contains(body, `"code":"`+c.wantErr+`"`) {
				t.Fatalf("want %d %s, got %d %s", c.wantCode, c.wantErr, code, body)
			}
		})
	}
	// The listed student may join; tutors and admins may watch.
	if code, body := h.Call(student1, "proctoring.startSession", map[string]string{"exam_id": "listed"}); code != 200 {
		t.Fatalf("listed student: %d %s", code, body)
	}
	for _, u := range []identity.User{tutor1, admin} {
		if code, body := h.Query(u, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"}); code != 200 {
			t.Fatalf("%s watches e1: %d %s", u.ID, code, body)
		}
	}
	// A student reads their own session.
	if code, body := h.Query(student1, "proctoring.getSession", map[string]string{"exam_id": "e1", "student_id": student1.ID}); code != 200 {
		t.Fatalf("own session: %d %s", code, body)
	}
	// Nothing above changed student-1's session except its start.
	_, body := h.Query(tutor1, "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	got := sessions(t, json.RawMessage(body))
	if diff := cmp.Diff(1, len(got)); diff != "" || got[0].ViolationCount != 0 {
		t.Fatalf("sessions changed: %s", body)
	}
	_ = http.StatusOK
}

// A tutor removed from an exam loses its live views at once, with
// forbidden on each subscription, while an admin keeps watching.
func TestRemovedTutorLosesTheDashboard(t *testing.T) {
	h := bootWithExams(t)
	tutor := h.DialAs(tutor1)
	tutor.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})
	tutor.Sub("q2", "proctoring.getViolations", map[string]string{"exam_id": "e1"})
	boss := h.DialAs(admin)
	boss.Sub("a1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})

	h.Exam(exam.Registration{ExamID: "e1", Title: "Exam one", TutorIDs: []string{tutor2.ID}, Status: exam.Open})
	ended := map[string]string{}
	for range 2 {
		f := tutor.Next()
		if f.Type != "error" {
			t.Fatalf("want an error per subscription, got %+v", f)
		}
		ended[f.ID] = f.Code
	}
	if diff := cmp.Diff(map[string]string{"q1": "forbidden", "q2": "forbidden"}, ended); diff != "" {
		t.Fatalf("ended subscriptions (-want +got):\n%s", diff)
	}

	student := h.DialAs(student1)
	mustResult(t, student.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	if got := sessions(t, oneData(t, boss, "a1")); len(got) != 1 {
		t.Fatalf("admin: want the new session, got %v", got)
	}
	if leaked := tutor.Quiet(100 * time.Millisecond); len(leaked) > 0 {
		t.Fatalf("the removed tutor still receives frames: %+v", leaked)
	}
}
