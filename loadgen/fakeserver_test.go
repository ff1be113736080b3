package loadgen

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"

	"invigil/app/apptest"
	"invigil/app/webhook"
)

// fakeServer speaks the contract as the server with deltas will: after a
// subscription's first data, sessions and chat messages change by delta
// frames (with order when it changes), the leaderboard by whole data. It
// has no engine behind it: it exists to drive the generator's delta, chat
// and score paths before the real server has them.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server
	ver *webhook.Verifier

	mu       sync.Mutex
	sessions map[string]map[string]map[string]any // exam → student → row
	chats    map[string]string                    // chat session id → exam
	messages map[string][]map[string]any          // chat session id → rows
	scores   map[string][]map[string]any          // quiz → rows
	subs     []*fakeSub
	n        int

	// shed, when set, refuses every heartbeat as a busy server does:
	// rate_limited, come back after shed; beats records when each came.
	shed  time.Duration
	beats map[string][]time.Time // student → arrivals
}

type fakeSub struct {
	c         *fakeConn
	id, query string
	key       string // exam id, chat session id or quiz code
	lastOrder []string
}

type fakeConn struct {
	mu   sync.Mutex
	conn *websocket.Conn
	user string
	role string
}

func (c *fakeConn) send(v any) {
	b, _ := json.Marshal(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.WriteMessage(websocket.TextMessage, b)
}

func newFakeServer(t *testing.T) *fakeServer {
	ver, err := webhook.NewVerifier(apptest.HookSecret, clockwork.NewRealClock())
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, ver: ver, sessions: map[string]map[string]map[string]any{},
		chats: map[string]string{}, messages: map[string][]map[string]any{}, scores: map[string][]map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", f.ws)
	mux.HandleFunc("/hooks/{name}", f.hook)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) hook(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if _, err := f.ver.Verify(r.Header, body); err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"code":"unauthenticated","message":"bad signature"}`)
		return
	}
	var v map[string]any
	json.Unmarshal(body, &v)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.PathValue("name") {
	case "exams":
		if f.sessions[v["exam_id"].(string)] == nil {
			f.sessions[v["exam_id"].(string)] = map[string]map[string]any{}
		}
	case "scores":
		quiz := v["quiz_code"].(string)
		f.scores[quiz] = append(f.scores[quiz], map[string]any{"nickname": v["nickname"], "score": v["score"]})
		rows := slices.Clone(f.scores[quiz])
		slices.SortStableFunc(rows, func(a, b map[string]any) int { return int(b["score"].(float64) - a["score"].(float64)) })
		var ranked []map[string]any
		for i, row := range rows[:min(10, len(rows))] {
			ranked = append(ranked, map[string]any{"rank": i + 1, "nickname": row["nickname"], "score": row["score"]})
		}
		for _, s := range f.subs {
			if s.query == fnLeaderboard && s.key == quiz {
				s.c.send(map[string]any{"type": "data", "id": s.id, "value": ranked}) // no _id: keyed by nickname
			}
		}
	}
	io.WriteString(w, `{"ok":true}`)
}

func (f *fakeServer) ws(w http.ResponseWriter, r *http.Request) {
	conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &fakeConn{conn: conn}
	defer conn.Close()
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			Type, ID, Token, Fn, Query string
			Args                       map[string]any
			Deltas                     bool
		}
		json.Unmarshal(b, &m)
		switch m.Type {
		case "auth":
			parts := strings.Split(m.Token, ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			var claims struct {
				Sub         string
				AppMetadata struct{ Role string } `json:"app_metadata"`
			}
			json.Unmarshal(payload, &claims)
			c.user, c.role = claims.Sub, claims.AppMetadata.Role
			c.send(map[string]any{"type": "authed", "user": map[string]string{"id": c.user, "role": c.role}})
		case "sub":
			f.subscribe(c, m.ID, m.Query, m.Args, m.Deltas)
		case "call":
			f.call(c, m.ID, m.Fn, m.Args)
		}
	}
}

func (f *fakeServer) subscribe(c *fakeConn, id, query string, args map[string]any, deltas bool) {
	if !deltas && query != fnLeaderboard {
		f.t.Errorf("sub %s without deltas", query)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSub{c: c, id: id, query: query}
	var value any
	switch query {
	case fnSessions:
		s.key = args["exam_id"].(string)
		rows, order := f.sessionRows(s.key)
		s.lastOrder, value = order, rows
	case fnMessages:
		s.key = args["session_id"].(string)
		value = append([]map[string]any{}, f.messages[s.key]...)
	case fnLeaderboard:
		s.key = args["quiz_code"].(string)
		value = []any{}
	default:
		c.send(map[string]any{"type": "error", "id": id, "code": "not_found"})
		return
	}
	f.subs = append(f.subs, s)
	c.send(map[string]any{"type": "data", "id": id, "value": value})
}

// sessionRows are an exam's rows by student name, and their ids in order.
func (f *fakeServer) sessionRows(exam string) ([]map[string]any, []string) {
	rows := []map[string]any{}
	for _, row := range f.sessions[exam] {
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b map[string]any) int {
		return strings.Compare(a["student_name"].(string), b["student_name"].(string))
	})
	order := make([]string, len(rows))
	for i, row := range rows {
		order[i] = row["_id"].(string)
	}
	return rows, order
}

func (f *fakeServer) call(c *fakeConn, id, fn string, args map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	result := func(v any) { c.send(map[string]any{"type": "result", "id": id, "value": v}) }
	if fn == fnHeartbeat && f.shed > 0 {
		f.beats[c.user] = append(f.beats[c.user], time.Now())
		c.send(map[string]any{"type": "error", "id": id, "code": "rate_limited", "message": "busy", "retry_after_ms": f.shed.Milliseconds()})
		return
	}
	switch fn {
	case fnStart, fnHeartbeat:
		exam := args["exam_id"].(string)
		row := f.sessions[exam][c.user]
		if row == nil {
			f.n++
			row = map[string]any{"_id": fmt.Sprintf("sess-%d", f.n), "exam_id": exam, "student_id": c.user,
				"student_name": c.user, "status": "active", "answered_count": 0}
			f.sessions[exam][c.user] = row
		}
		if fn == fnHeartbeat {
			row = maps2(row)
			row["answered_count"] = args["answered_count"]
			f.sessions[exam][c.user] = row
		}
		_, order := f.sessionRows(exam)
		for _, s := range f.subs {
			if s.query == fnSessions && s.key == exam {
				d := map[string]any{"type": "delta", "id": s.id, "upsert": []any{row}, "remove": []string{}}
				if !slices.Equal(order, s.lastOrder) {
					d["order"], s.lastOrder = order, order
				}
				s.c.send(d)
			}
		}
		result(row)
	case fnViolation:
		result(nil)
	case fnStartChat:
		f.n++
		sid := fmt.Sprintf("chat-%d", f.n)
		f.chats[sid] = args["exam_id"].(string)
		result(map[string]any{"_id": sid, "scope": "exam", "status": "waiting"})
	case fnSend:
		sid := args["session_id"].(string)
		f.n++
		msg := map[string]any{"_id": fmt.Sprintf("msg-%d", f.n), "session_id": sid,
			"client_msg_id": args["client_msg_id"], "body": args["body"], "sender_id": c.user}
		f.messages[sid] = append(f.messages[sid], msg)
		var order []string
		for _, m := range f.messages[sid] {
			order = append(order, m["_id"].(string))
		}
		for _, s := range f.subs {
			if s.query == fnMessages && s.key == sid {
				s.c.send(map[string]any{"type": "delta", "id": s.id, "upsert": []any{msg}, "remove": []string{}, "order": order})
			}
		}
		result(msg)
	default:
		c.send(map[string]any{"type": "error", "id": id, "code": "not_found", "message": "no function " + fn})
	}
}

func maps2(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Against a server with deltas, chat and scores, every propagation is
// measured, for every watcher, and the deltas fit what the tutors hold.
func TestLoadAgainstAServerWithDeltasChatAndScores(t *testing.T) {
	f := newFakeServer(t)
	var stdout, stderr strings.Builder
	code := Main(t.Context(), []string{"--url", f.srv.URL, "--jwt-secret", "x", "--webhook-secret", apptest.HookSecret,
		"--students", "12", "--exams", "2", "--tutors-per-exam", "2", "--interval", "250ms", "--duration", "2s",
		"--chat-rate", "8", "--scores-rate", "4", "--progress", "0", "--server-pid", "-1", "--json"}, &stdout, &stderr)
	var r Report
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s", code, err, stderr.String())
	}
	t.Log(stderr.String())
	if r.ErrorsTotal != 0 || len(r.Anomalies) != 0 {
		t.Errorf("errors %v, anomalies %v", r.ErrorsByCode, r.Anomalies)
	}
	if p := r.Propagation; p.N == 0 || p.Seen != p.Expected || p.WatchersMeasured != 4 {
		t.Errorf("propagation: n %d, seen %d of %d, %d of 4 tutors", p.N, p.Seen, p.Expected, p.WatchersMeasured)
	}
	m := r.MessagePropagation
	if sent := r.Fns[fnSend]; m == nil || sent == nil || sent.Ack.N < 10 || m.N == 0 || m.Seen != m.Expected || m.WatchersMeasured != 4 {
		t.Errorf("message propagation: %+v (sent %+v)", m, sent)
	} else if m.Expected != 2*sent.Ack.N {
		t.Errorf("%d messages sent to rooms watched by 2 tutors each: want %d sightings expected, got %d", sent.Ack.N, 2*sent.Ack.N, m.Expected)
	}
	s := r.ScorePropagation
	if sc := r.Fns[fnHookScores]; s == nil || sc == nil || sc.Ack.N < 4 || s.N != sc.Ack.N || s.WatchersMeasured != 2 {
		t.Errorf("score propagation: %+v (hooks %+v)", s, sc)
	}
	if c := r.Connections["projectors"]; c == nil || c.Ready != 2 {
		t.Errorf("projectors: %+v", c)
	}
	if tb := r.TutorBytes; tb.Tutors != 4 || tb.Zero != 0 {
		t.Errorf("bytes per tutor: %+v", tb)
	}
}

// A student told rate_limited with retry_after_ms waits that long before
// its next heartbeat, as static/exam.js does: a shedding server sees the
// load it asked for, not the generator's schedule.
func TestStudentsWaitTheRetryAfterAsked(t *testing.T) {
	f := newFakeServer(t)
	const shed = 700 * time.Millisecond
	f.mu.Lock()
	f.shed, f.beats = shed, map[string][]time.Time{}
	f.mu.Unlock()
	var stdout, stderr strings.Builder
	code := Main(t.Context(), []string{"--url", f.srv.URL, "--jwt-secret", "x", "--webhook-secret", apptest.HookSecret,
		"--students", "4", "--exams", "1", "--tutors-per-exam", "1", "--interval", "100ms", "--duration", "2s",
		"--progress", "0", "--server-pid", "-1", "--json"}, &stdout, &stderr)
	var r Report
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		t.Fatalf("exit %d, %v\n%s", code, err, stderr.String())
	}
	if hb := r.Fns[fnHeartbeat]; hb == nil || hb.Errors["rate_limited"] == 0 {
		t.Fatalf("heartbeats: %+v", hb)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.beats) != 4 {
		t.Fatalf("heartbeats from %d of 4 students", len(f.beats))
	}
	for user, at := range f.beats {
		// Every 100 ms unrefused would be ~20 in 2 s.
		if len(at) > 5 {
			t.Errorf("%s sent %d heartbeats while told to wait %v each time", user, len(at), shed)
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < shed-50*time.Millisecond {
				t.Errorf("%s heartbeat %d came %v after the one refused with retry_after_ms %d", user, i, gap, shed.Milliseconds())
			}
		}
	}
}
