package app_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/engine"
)

// bootWithSessions starts invigil with exams e1 and e2 where student-1 (over
// a socket, returned) and student-2 (over HTTP) sit e1 and student-1 has
// logged a violation, so there is state for a bad request to damage.
func bootWithSessions(t *testing.T, opts ...apptest.Option) (*apptest.Harness, *apptest.WS) {
	t.Helper()
	h := bootWithExams(t, opts...)
	s := h.DialAs(student1)
	mustResult(t, s.Call("proctoring.startSession", map[string]string{"exam_id": "e1"}))
	mustResult(t, s.Call("proctoring.logViolation", map[string]any{"exam_id": "e1", "type": "paste", "detail": "ctrl+v"}))
	if code, body := h.Call(student2, "proctoring.startSession", map[string]string{"exam_id": "e1"}); code != http.StatusOK {
		t.Fatalf("start over HTTP: %d %s", code, body)
	}
	return h, s
}

// TestBadArgumentsChangeNothing sends each bad request as a socket frame
// and as an HTTP request: each gets its code (and HTTP status), the socket
// stays usable, and the exam's sessions and violations are untouched.
func TestBadArgumentsChangeNothing(t *testing.T) {
	h, ws := bootWithSessions(t)
	long := strings.Repeat("x", 1001)
	huge := strings.Repeat("x", 70<<10) // the request is past 64 KiB
	cases := []struct {
		name  string
		query bool   // a query: sub on the socket, /api/query over HTTP
		fn    string // function or query name
		args  string // raw JSON text of the arguments, valid or not
		code  string
		// frameLevel: the socket cannot read the frame, so its error has no id.
		frameLevel bool
	}{
		{name: "startSession without exam_id", fn: "proctoring.startSession", args: `{}`, code: "invalid_argument"},
		{name: "startSession with empty args", fn: "proctoring.startSession", args: `null`, code: "invalid_argument"},
		{name: "heartbeat without exam_id", fn: "proctoring.heartbeat", args: `{"current_question":1,"answered_count":1}`, code: "invalid_argument"},
		{name: "heartbeat without current_question", fn: "proctoring.heartbeat", args: `{"exam_id":"e1","answered_count":1}`, code: "invalid_argument"},
		{name: "heartbeat without answered_count", fn: "proctoring.heartbeat", args: `{"exam_id":"e1","current_question":1}`, code: "invalid_argument"},
		{name: "logViolation without type", fn: "proctoring.logViolation", args: `{"exam_id":"e1"}`, code: "invalid_argument"},
		{name: "exam_id as a number", fn: "proctoring.startSession", args: `{"exam_id":1}`, code: "invalid_argument"},
		{name: "exam_id as a number in a violation", fn: "proctoring.logViolation", args: `{"exam_id":1,"type":"copy"}`, code: "invalid_argument"},
		{name: "current_question as a string", fn: "proctoring.heartbeat", args: `{"exam_id":"e1","current_question":"3","answered_count":1}`, code: "invalid_argument"},
		{name: "unknown violation type", fn: "proctoring.logViolation", args: `{"exam_id":"e1","type":"sneezed"}`, code: "invalid_argument"},
		{name: "negative current_question", fn: "proctoring.heartbeat", args: `{"exam_id":"e1","current_question":-1,"answered_count":0}`, code: "invalid_argument"},
		{name: "negative answered_count", fn: "proctoring.heartbeat", args: `{"exam_id":"e1","current_question":0,"answered_count":-2}`, code: "invalid_argument"},
		{name: "negative rtt", fn: "proctoring.heartbeat", args: `{"exam_id":"e1","current_question":0,"answered_count":0,"network":{"rtt_ms":-5}}`, code: "invalid_argument"},
		{name: "detail over 1000 bytes", fn: "proctoring.logViolation", args: `{"exam_id":"e1","type":"copy","detail":"` + long + `"}`, code: "invalid_argument"},
		{name: "client_ts not a time", fn: "proctoring.logViolation", args: `{"exam_id":"e1","type":"copy","client_ts":"yesterday"}`, code: "invalid_argument"},
		{name: "args not JSON", fn: "proctoring.startSession", args: `{"exam_id":`, code: "invalid_argument", frameLevel: true},
		{name: "args not an object", fn: "proctoring.startSession", args: `["e1"]`, code: "invalid_argument"},
		{name: "unknown function", fn: "proctoring.cheat", args: `{"exam_id":"e1"}`, code: "not_found"},
		{name: "unknown query", query: true, fn: "proctoring.getAnswers", args: `{"exam_id":"e1"}`, code: "not_found"},
		{name: "query with exam_id as a number", query: true, fn: "proctoring.getSession", args: `{"exam_id":1,"student_id":"student-1"}`, code: "invalid_argument"},
		{name: "query with a negative limit", query: true, fn: "proctoring.getViolations", args: `{"exam_id":"e1","limit":-1}`, code: "invalid_argument"},
		{name: "oversized call", fn: "proctoring.logViolation", args: `{"exam_id":"e1","type":"copy","detail":"` + huge + `"}`, code: "too_large", frameLevel: true},
		{name: "oversized query", query: true, fn: "proctoring.getSession", args: `{"exam_id":"e1","student_id":"` + huge + `"}`, code: "too_large", frameLevel: true},
	}
	for i, c := range cases {
		// The table makes more calls than the per-user burst allows at
		// once; a second of (fake) time refills the bucket.
		h.Advance(time.Second)
		t.Run(c.name+"/ws", func(t *testing.T) {
			before := readExamState(t, h, "e1")
			id, frame := fmt.Sprintf("c%d", i), "call"
			key := "fn"
			if c.query {
				frame, key = "sub", "query"
			}
			sendText(t, ws, fmt.Sprintf(`{"type":%q,"id":%q,%q:%q,"args":%s}`, frame, id, key, c.fn, c.args))
			wantID := id
			if c.frameLevel {
				wantID = ""
			}
			wantError(t, ws.Next(), wantID, c.code)
			pingPong(t, ws)
			mustUnchanged(t, h, "e1", before)
		})
		t.Run(c.name+"/http", func(t *testing.T) {
			before := readExamState(t, h, "e1")
			path := "/api/call/" + c.fn
			if c.query {
				path = "/api/query/" + c.fn
			}
			code, body := postAs(h, path, h.Token(student1), []byte(c.args))
			want := httpErr{Status: httpStatus[c.code], Code: c.code}
			if diff := cmp.Diff(want, decodeHTTPErr(t, code, body)); diff != "" {
				t.Fatalf("POST %s (-want +got):\n%s\nbody: %.300s", path, diff, body)
			}
			mustUnchanged(t, h, "e1", before)
		})
	}
}

// httpStatus is CONTRACT §3's code to status table.
var httpStatus = map[string]int{
	"unauthenticated": 401, "forbidden": 403, "invalid_argument": 400, "not_found": 404,
	"conflict": 409, "rate_limited": 429, "too_large": 413, "internal": 500,
}

// TestBadFramesChangeNothing sends malformed socket frames: each is answered
// with its code (with the frame's id when it has one), the socket stays
// usable and the database is untouched.
func TestBadFramesChangeNothing(t *testing.T) {
	h, ws := bootWithSessions(t)
	// pad builds a call frame of exactly n bytes whose detail is too long.
	pad := func(id string, n int) string {
		head := fmt.Sprintf(`{"type":"call","id":%q,"fn":"proctoring.logViolation","args":{"exam_id":"e1","type":"copy","detail":"`, id)
		tail := `"}}`
		return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	}
	cases := []struct {
		name   string
		frame  string
		binary bool
		id     string
		code   string
	}{
		{name: "not JSON", frame: `{"type":"call",`, code: "invalid_argument"},
		{name: "a JSON array", frame: `[{"type":"ping"}]`, code: "invalid_argument"},
		{name: "a binary frame", frame: `{"type":"ping"}`, binary: true, code: "invalid_argument"},
		{name: "unknown frame type", frame: `{"type":"subscribe","id":"x1","query":"proctoring.getSession"}`, id: "x1", code: "invalid_argument"},
		{name: "no frame type", frame: `{"id":"x2"}`, id: "x2", code: "invalid_argument"},
		{name: "sub without id", frame: `{"type":"sub","query":"proctoring.getSession","args":{"exam_id":"e1","student_id":"student-1"}}`, code: "invalid_argument"},
		{name: "sub without query", frame: `{"type":"sub","id":"s1"}`, id: "s1", code: "invalid_argument"},
		{name: "call without id", frame: `{"type":"call","fn":"proctoring.logViolation","args":{"exam_id":"e1","type":"copy"}}`, code: "invalid_argument"},
		{name: "call without fn", frame: `{"type":"call","id":"c1","args":{"exam_id":"e1","type":"copy"}}`, id: "c1", code: "invalid_argument"},
		{name: "id over 64 bytes", frame: `{"type":"call","id":"` + strings.Repeat("i", 65) + `","fn":"proctoring.logViolation","args":{"exam_id":"e1","type":"copy"}}`, code: "invalid_argument"},
		{name: "frame of exactly 64 KiB is read", frame: pad("big", 64<<10), id: "big", code: "invalid_argument"},
		{name: "frame of 64 KiB + 1", frame: pad("big", 64<<10+1), code: "too_large"},
		{name: "frame of 200 KiB", frame: pad("big", 200<<10), code: "too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := readExamState(t, h, "e1")
			kind := websocket.TextMessage
			if c.binary {
				kind = websocket.BinaryMessage
			}
			if err := ws.Conn.WriteMessage(kind, []byte(c.frame)); err != nil {
				t.Fatal(err)
			}
			wantError(t, ws.Next(), c.id, c.code)
			pingPong(t, ws)
			mustUnchanged(t, h, "e1", before)
		})
	}
	// The socket still does real work after all that.
	h.Advance(10 * time.Second)
	mustResult(t, ws.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": 2, "answered_count": 1}))
}

// TestUnauthenticatedSocketIsClosed: a socket that does not authenticate
// within 10 s is closed; one that did stays open.
func TestUnauthenticatedSocketIsClosed(t *testing.T) {
	h := bootWithExams(t)
	idle := h.Dial(nil)
	// A pong proves the socket's connect handler ran, so its 10 s timer
	// runs on the fake clock from now.
	pingPong(t, idle)
	authed := h.DialAs(tutor1)

	h.Advance(9*time.Second + 900*time.Millisecond)
	pingPong(t, idle) // pings are no auth: the timer keeps running
	h.Advance(100 * time.Millisecond)
	waitClosed(t, idle)

	if got := authed.Quiet(100 * time.Millisecond); len(got) > 0 {
		t.Fatalf("authenticated socket got %+v", got)
	}
	pingPong(t, authed)
}

// TestFramesBeforeAuth: anything but auth (and ping) before auth is refused
// with the frame's id, and the socket can still authenticate.
func TestFramesBeforeAuth(t *testing.T) {
	h := bootWithExams(t)
	w := h.Dial(nil)
	cases := []struct {
		name  string
		frame map[string]any
		id    string
	}{
		{"call", map[string]any{"type": "call", "id": "c1", "fn": "proctoring.startSession", "args": map[string]string{"exam_id": "e1"}}, "c1"},
		{"sub", map[string]any{"type": "sub", "id": "q1", "query": "proctoring.getExamSessions", "args": map[string]string{"exam_id": "e1"}}, "q1"},
		{"sub to an unknown query", map[string]any{"type": "sub", "id": "q2", "query": "nope.nothing"}, "q2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w.Send(c.frame)
			wantError(t, w.Next(), c.id, "unauthenticated")
			pingPong(t, w)
		})
	}
	t.Run("auth afterwards", func(t *testing.T) {
		w.Send(map[string]string{"type": "auth", "token": h.Token(tutor1)})
		f := w.Next()
		if f.Type != "authed" || f.User == nil || *f.User != tutor1 {
			t.Fatalf("want authed as %+v, got %+v", tutor1, f)
		}
		if got := sessions(t, w.Sub("q1", "proctoring.getExamSessions", map[string]string{"exam_id": "e1"})); len(got) != 0 {
			t.Fatalf("want no sessions, got %+v", got)
		}
	})
}

// TestSubscriptionIDs: a duplicate id is refused, and (an error with a
// subscription's id ends it) the original stops too; unsub stops data.
func TestSubscriptionIDs(t *testing.T) {
	h := bootWithExams(t)
	student := h.DialAs(student1)
	args := map[string]string{"exam_id": "e1"}
	hb := func(q int) {
		t.Helper()
		h.Advance(5 * time.Second)
		mustResult(t, student.Call("proctoring.heartbeat", map[string]any{"exam_id": "e1", "current_question": q, "answered_count": 0}))
	}
	mustResult(t, student.Call("proctoring.startSession", args))

	t.Run("duplicate id", func(t *testing.T) {
		tutor := h.DialAs(tutor1)
		tutor.Sub("q1", "proctoring.getExamSessions", args)
		tutor.Send(map[string]any{"type": "sub", "id": "q1", "query": "proctoring.getViolations", "args": args})
		wantError(t, tutor.Next(), "q1", "invalid_argument")
		hb(1)
		if got := tutor.Quiet(200 * time.Millisecond); len(got) > 0 {
			t.Fatalf("q1 ended with its error, yet the socket got %+v", got)
		}
		// The id is free again.
		if got := sessions(t, tutor.Sub("q1", "proctoring.getExamSessions", args)); len(got) != 1 || got[0].CurrentQuestion != 1 {
			t.Fatalf("re-sub q1: got %+v", got)
		}
	})
	t.Run("unsub stops data", func(t *testing.T) {
		tutor := h.DialAs(tutor1)
		tutor.Sub("q2", "proctoring.getExamSessions", args)
		tutor.Send(map[string]string{"type": "unsub", "id": "q2"})
		pingPong(t, tutor) // the unsub is handled
		hb(2)
		if got := tutor.Quiet(200 * time.Millisecond); len(got) > 0 {
			t.Fatalf("after unsub the socket got %+v", got)
		}
		if got := sessions(t, tutor.Sub("q3", "proctoring.getExamSessions", args)); len(got) != 1 || got[0].CurrentQuestion != 2 {
			t.Fatalf("a new sub sees the write: got %+v", got)
		}
	})
}

// TestAllowedOrigins: with INVIGIL_ALLOWED_ORIGINS set, a browser from
// another origin cannot open /ws; listed origins and non-browsers can.
func TestAllowedOrigins(t *testing.T) {
	h := apptest.Boot(t, apptest.WithConfig(func(c *app.Config) {
		c.AllowedOrigins = []string{"https://exam.example"}
	}))
	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	cases := []struct {
		origin string
		ok     bool
	}{
		{"https://evil.example", false},
		{"https://exam.example.evil.example", false},
		{"http://exam.example", false},
		{"https://exam.example", true},
		{"", true},
	}
	for _, c := range cases {
		t.Run("origin "+c.origin, func(t *testing.T) {
			hdr := http.Header{}
			if c.origin != "" {
				hdr.Set("Origin", c.origin)
			}
			conn, res, err := websocket.DefaultDialer.Dial(url, hdr)
			if !c.ok {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded; want it refused")
				}
				if res == nil || res.StatusCode != http.StatusForbidden {
					t.Fatalf("want 403, got %v (%v)", res, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake refused: %v", err)
			}
			defer conn.Close()
			conn.WriteJSON(map[string]string{"type": "ping"})
			var f apptest.Frame
			if err := conn.ReadJSON(&f); err != nil || f.Type != "pong" {
				t.Fatalf("want pong, got %+v %v", f, err)
			}
		})
	}
}

// TestSlowConsumerIsClosed: a socket that subscribes and stops reading is
// closed once its send buffer fills, rather than losing frames silently.
func TestSlowConsumerIsClosed(t *testing.T) {
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) {
		c.SendQueueBytes = 64 << 10
		c.WriteTimeout = 2 * time.Second
		c.ViolationDetailCap = 1 << 20
		c.ViolationsPerMinute = 1 << 20 // every write keeps changing the newest 500
	}))
	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	slow, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteJSON(map[string]any{"type": "auth", "token": h.Token(tutor1)})
	// Every violation adds ~1 KB to this result (up to 500 rows), so frames
	// grow quickly and the kernel's socket buffers fill; the engine paces
	// this growing query, so it takes a few hundred writes.
	slow.WriteJSON(map[string]any{"type": "sub", "id": "q1", "query": "proctoring.getViolations",
		"args": map[string]any{"exam_id": "e1", "limit": 500}})

	ctx := t.Context()
	as := engine.Caller{User: student1}
	if _, err := h.App.Engine.Call(ctx, as, "proctoring.startSession", json.RawMessage(`{"exam_id":"e1"}`)); err != nil {
		t.Fatal(err)
	}
	violation := json.RawMessage(`{"exam_id":"e1","type":"copy","detail":"` + strings.Repeat("x", 1000) + `"}`)
	deadline := time.Now().Add(20 * time.Second) // generous: -race slows the paced query
	writes := 0
	for metric(t, h, "invigil_ws_slow_closed_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d writes the slow socket is still open", writes)
		}
		// Ten at a time: they share one group commit.
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if _, err := h.App.Engine.Call(ctx, as, "proctoring.logViolation", violation); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		writes += 10
	}
	// The client sees the end of the stream (whatever was buffered, then
	// EOF or a reset), not a read timeout.
	slow.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := slow.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("socket still open after the slow close (%d writes)", writes)
			}
			break
		}
	}
	t.Logf("closed after %d writes; slow_closed_total=%v", writes, metric(t, h, "invigil_ws_slow_closed_total"))
}

// TestSlowConsumerCostsOthersNothing: a dashboard that stops reading is
// closed within the write timeout, its queue's memory released, and the
// other sockets' round trips do not move while it hangs (measured: pings
// of a third socket, with and without the slow one, under the same writes).
func TestSlowConsumerCostsOthersNothing(t *testing.T) {
	h := bootWithExams(t, apptest.WithRealClock(), apptest.WithConfig(func(c *app.Config) {
		c.WriteTimeout = 3 * time.Second
		c.ViolationDetailCap = 1 << 20
		c.ViolationsPerMinute = 1 << 20
	}))
	ctx := t.Context()
	as := engine.Caller{User: student1}
	if _, err := h.App.Engine.Call(ctx, as, "proctoring.startSession", json.RawMessage(`{"exam_id":"e1"}`)); err != nil {
		t.Fatal(err)
	}
	other := h.DialAs(tutor2)
	violation := json.RawMessage(`{"exam_id":"e1","type":"copy","detail":"` + strings.Repeat("x", 1000) + `"}`)
	// rtts writes for d and times pings of the other socket meanwhile.
	rtts := func(d time.Duration) []time.Duration {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.App.Engine.Call(ctx, as, "proctoring.logViolation", violation)
			}
		})
		var out []time.Duration
		for end := time.Now().Add(d); time.Now().Before(end); {
			start := time.Now()
			pingPong(t, other)
			out = append(out, time.Since(start))
			time.Sleep(10 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		slices.Sort(out)
		return out
	}
	p99 := func(d []time.Duration) time.Duration { return d[len(d)*99/100] }
	without := rtts(2 * time.Second)

	url := "ws" + strings.TrimPrefix(h.URL, "http") + "/ws"
	slow, _, err := smallReadBufferDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteJSON(map[string]any{"type": "auth", "token": h.Token(tutor1)})
	slow.WriteJSON(map[string]any{"type": "sub", "id": "q1", "query": "proctoring.getViolations", "deltas": true,
		"args": map[string]any{"exam_id": "e1", "limit": 500}})
	opened := time.Now()
	with := rtts(2 * time.Second)
	for metric(t, h, "invigil_ws_slow_closed_total") < 1 {
		if time.Since(opened) > 15*time.Second {
			t.Fatal("the slow socket was not closed within 15 s")
		}
		h.App.Engine.Call(ctx, as, "proctoring.logViolation", violation)
	}
	closedAfter := time.Since(opened)
	waitFor(t, func() bool { return metric(t, h, "invigil_ws_send_queue_bytes") == 0 })
	t.Logf("slow socket closed after %v; other socket's ping p99 %v without it, %v with it",
		closedAfter.Round(time.Millisecond), p99(without), p99(with))
	if limit := max(4*p99(without), p99(without)+50*time.Millisecond); p99(with) > limit {
		t.Fatalf("a slow consumer moved another socket's p99 from %v to %v", p99(without), p99(with))
	}
}
