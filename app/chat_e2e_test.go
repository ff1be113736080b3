package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app"
	"invigil/app/apptest"
	"invigil/app/chat"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/presence"
	"invigil/store"
)

var (
	agent1 = identity.User{ID: "agent-1", Role: identity.Agent, Name: "Ada Agent"}
	agent2 = identity.User{ID: "agent-2", Role: identity.Agent, Name: "Abe Agent"}
)

// subDeltas subscribes asking for deltas and returns the first value.
func subDeltas(t *testing.T, w *apptest.WS, id, query string, args any) json.RawMessage {
	t.Helper()
	w.Send(map[string]any{"type": "sub", "id": id, "query": query, "args": args, "deltas": true})
	f := w.Next()
	if f.Type != "data" || f.ID != id {
		t.Fatalf("sub %s %s: got %+v", id, query, f)
	}
	return f.Value
}

// settle waits until the engine ran everything the writes so far made
// dirty, then collects what each socket received within a short while.
func settle(t *testing.T, h *apptest.Harness, sockets ...*apptest.WS) [][]apptest.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.App.Engine.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	out := make([][]apptest.Frame, len(sockets))
	var wg sync.WaitGroup
	for i, w := range sockets {
		wg.Go(func() { out[i] = w.Quiet(150 * time.Millisecond) })
	}
	wg.Wait()
	return out
}

func countByID(fs []apptest.Frame) map[string]int {
	n := map[string]int{}
	for _, f := range fs {
		n[f.ID]++
	}
	return n
}

func decodeAs[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// startSupport has u start a support chat and returns it.
func startSupport(t *testing.T, w *apptest.WS) chat.SessionView {
	t.Helper()
	return decodeAs[chat.SessionView](t, mustResult(t, w.Call("chat.startChat", map[string]any{"scope": "support"})))
}

func send(w *apptest.WS, sessionID, clientID, body string) apptest.Frame {
	return w.Call("chat.sendMessage", map[string]any{"session_id": sessionID, "client_msg_id": clientID, "body": body})
}

// Two users chat over real sockets: each sees the other's message, the
// typing flag (and its expiry) and the read receipt, each as exactly one
// frame on the subscription it concerns and none on the others; a typing
// toggle and a presence touch never reach a getMessages subscription.
func TestChatTwoUsersFrameByFrame(t *testing.T) {
	// Counts the runs of the message list (whole or a patch): typing and
	// presence must cause none.
	var messageRuns atomic.Int64
	h := bootWithExams(t, apptest.WithSetup(func(a *app.App) {
		a.Engine.SetRunHook(func(name, _ string) {
			if name == "chat.getMessages" {
				messageRuns.Add(1)
			}
		})
	}))
	stu, ag := h.DialAs(student1), h.DialAs(agent1)
	c := startSupport(t, stu)
	if c.Status != "waiting" {
		t.Fatalf("a new chat: %+v", c)
	}
	if got := decodeAs[chat.SessionView](t, mustResult(t, ag.Call("chat.assignAgent", map[string]any{"session_id": c.ID}))); got.Status != "active" || *got.AssignedTo != agent1.ID {
		t.Fatalf("claimed: %+v", got)
	}
	scope := presence.ChatScope(c.ID)
	views := map[*apptest.WS]map[string]*apptest.View{}
	for _, w := range []*apptest.WS{stu, ag} {
		views[w] = map[string]*apptest.View{"m": {}, "p": {}}
		views[w]["m"].Apply(apptest.Frame{Type: "data", Value: subDeltas(t, w, "m", "chat.getMessages", map[string]any{"session_id": c.ID})})
		views[w]["p"].Apply(apptest.Frame{Type: "data", Value: subDeltas(t, w, "p", "presence.listPresence", map[string]any{"scope": scope})})
	}
	var m1, m2 chat.MessageView
	// Each step: frames per subscription (the same on both sockets), and
	// for a message step the rows its delta carries.
	steps := []struct {
		name  string
		act   func()
		want  map[string]int
		check func()
		rows  int
	}{
		{"the student enters the chat", func() { mustResult(t, stu.Call("presence.touchPresence", map[string]any{"scope": scope})) },
			map[string]int{"p": 1}, nil, 0},
		{"the agent enters the chat", func() { mustResult(t, ag.Call("presence.touchPresence", map[string]any{"scope": scope})) },
			map[string]int{"p": 1}, nil, 0},
		{"the student writes", func() {
			m1 = decodeAs[chat.MessageView](t, mustResult(t, send(stu, c.ID, "s-1", "Hello, my exam link is broken")))
		},
			map[string]int{"m": 1}, func() {
				if m1.Seq != 1 || m1.SenderRole != "student" || len(m1.ReadBy) != 0 {
					t.Fatalf("m1: %+v", m1)
				}
			}, 1},
		{"the agent starts typing", func() { mustResult(t, ag.Call("chat.setTyping", map[string]any{"session_id": c.ID, "typing": true})) },
			map[string]int{"p": 1}, func() { wantTyping(t, views, stu, agent1.ID, true) }, 0},
		{"the typing flag expires", func() {
			h.Advance(h.App.Config.TypingTTL)
			expireTyping(t, h) // (or the app's job, as the clock moved)
		}, map[string]int{"p": 1}, func() { wantTyping(t, views, stu, agent1.ID, false) }, 0},
		{"the agent answers (and has read the student's message)", func() {
			m2 = decodeAs[chat.MessageView](t, mustResult(t, send(ag, c.ID, "a-1", "Let me look.")))
		}, map[string]int{"m": 1}, func() {
			got := decodeAs[[]chat.MessageView](t, views[stu]["m"].JSON())
			if len(got) != 2 || got[1].ID != m2.ID || !cmp.Equal(got[0].ReadBy, []string{agent1.ID}) {
				t.Fatalf("student holds %+v", got)
			}
		}, 2}, // the answer, and the question now read by the agent
		{"the student reads the answer", func() {
			mustResult(t, stu.Call("chat.markRead", map[string]any{"session_id": c.ID, "up_to_message_id": m2.ID}))
		}, map[string]int{"m": 1}, func() {
			got := decodeAs[[]chat.MessageView](t, views[ag]["m"].JSON())
			if !cmp.Equal(got[1].ReadBy, []string{student1.ID}) {
				t.Fatalf("agent holds %+v", got)
			}
		}, 1}, // only the row whose read_by changed
		{"the student reads it again", func() {
			mustResult(t, stu.Call("chat.markRead", map[string]any{"session_id": c.ID, "up_to_message_id": m2.ID}))
		}, map[string]int{}, nil, 0},
		{"the student types", func() { mustResult(t, stu.Call("chat.setTyping", map[string]any{"session_id": c.ID, "typing": true})) },
			map[string]int{"p": 1}, func() { wantTyping(t, views, ag, student1.ID, true) }, 0},
		{"the student stops typing", func() { mustResult(t, stu.Call("chat.setTyping", map[string]any{"session_id": c.ID, "typing": false})) },
			map[string]int{"p": 1}, func() { wantTyping(t, views, ag, student1.ID, false) }, 0},
		{"a presence touch a second later", func() {
			h.Advance(time.Second)
			mustResult(t, stu.Call("presence.touchPresence", map[string]any{"scope": scope}))
		}, map[string]int{"p": 1}, nil, 0},
		{"a presence touch elsewhere", func() { mustResult(t, stu.Call("presence.touchPresence", map[string]any{"scope": "global"})) },
			map[string]int{}, nil, 0},
		{"typing, then a message: the flag clears with it", func() {
			mustResult(t, stu.Call("chat.setTyping", map[string]any{"session_id": c.ID, "typing": true}))
			settle(t, h, stu, ag)
			mustResult(t, send(stu, c.ID, "s-2", "Thanks!"))
		}, map[string]int{"m": 1, "p": 1}, func() { wantTyping(t, views, ag, student1.ID, false) }, 0},
	}
	for _, step := range steps {
		runs := messageRuns.Load()
		step.act()
		got := settle(t, h, stu, ag)
		if step.want["m"] == 0 {
			if n := messageRuns.Load() - runs; n != 0 {
				t.Fatalf("%s: the message list ran %d times", step.name, n)
			}
		}
		for i, w := range []*apptest.WS{stu, ag} {
			for _, f := range got[i] {
				if f.Type != "delta" {
					t.Fatalf("%s: want only deltas, got %s", step.name, f.Raw)
				}
				if err := views[w][f.ID].Apply(f); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
			}
			if diff := cmp.Diff(step.want, countByID(got[i])); diff != "" {
				t.Fatalf("%s: frames on socket %d per subscription (-want +got):\n%s", step.name, i, diff)
			}
			for _, f := range got[i] {
				if f.ID == "m" && step.rows > 0 && len(f.Upsert)+len(f.Remove) != step.rows {
					t.Fatalf("%s: the delta carries %d rows, want %d: %s", step.name, len(f.Upsert)+len(f.Remove), step.rows, f.Raw)
				}
			}
		}
		if step.check != nil {
			step.check()
		}
	}
	// Both hold exactly what the queries return now.
	for _, w := range []*apptest.WS{stu, ag} {
		_, msgs := h.Query(student1, "chat.getMessages", map[string]any{"session_id": c.ID})
		if diff := cmp.Diff(decodeAny(t, json.RawMessage(msgs)), decodeAny(t, views[w]["m"].JSON())); diff != "" {
			t.Fatalf("messages held (-query +held):\n%s", diff)
		}
	}
}

// wantTyping checks what w holds of userID's typing flag.
func wantTyping(t *testing.T, views map[*apptest.WS]map[string]*apptest.View, w *apptest.WS, userID string, typing bool) {
	t.Helper()
	for _, p := range decodeAs[[]presence.View](t, views[w]["p"].JSON()) {
		if p.UserID == userID {
			if p.IsTyping != typing || !p.Online {
				t.Fatalf("%s: is_typing %v online %v, want typing %v", userID, p.IsTyping, p.Online, typing)
			}
			return
		}
	}
	t.Fatalf("%s is not in the presence list", userID)
}

// Twenty agents claim one chat at the same moment: exactly one wins, the
// others get conflict, and the chat is the winner's.
func TestChatClaimRace(t *testing.T) {
	h := bootWithExams(t)
	c := startSupport(t, h.DialAs(student1))
	agents := make([]*apptest.WS, 20)
	for i := range agents {
		agents[i] = h.DialAs(identity.User{ID: fmt.Sprintf("agent-%02d", i), Role: identity.Agent, Name: fmt.Sprint("Agent ", i)})
	}
	var start sync.WaitGroup
	start.Add(1)
	var sent sync.WaitGroup
	for _, w := range agents {
		sent.Go(func() {
			start.Wait()
			w.Send(map[string]any{"type": "call", "id": "claim", "fn": "chat.assignAgent", "args": map[string]any{"session_id": c.ID}})
		})
	}
	start.Done()
	sent.Wait()
	winners, conflicts := []string{}, 0
	for i, w := range agents {
		switch f := w.Next(); {
		case f.Type == "result":
			winners = append(winners, fmt.Sprintf("agent-%02d", i))
		case f.Code == "conflict":
			conflicts++
		default:
			t.Fatalf("agent %d: %+v", i, f)
		}
	}
	if len(winners) != 1 || conflicts != 19 {
		t.Fatalf("winners %v, conflicts %d", winners, conflicts)
	}
	s, err := h.App.DB.ChatSession(t.Context(), c.ID)
	if err != nil || s.AssignedTo != winners[0] || s.Status != "active" {
		t.Fatalf("the chat: %+v %v", s, err)
	}
}

// A retried sendMessage with the same client_msg_id stores one message and
// returns it, on the same socket, after a reconnect and over HTTP; the
// rate limit allows a burst of 10, then one a second, and a retry costs
// nothing.
func TestChatSendIsIdempotentAndRateLimited(t *testing.T) {
	h := bootWithExams(t)
	stu := h.DialAs(student1)
	c := startSupport(t, stu)
	first := decodeAs[chat.MessageView](t, mustResult(t, send(stu, c.ID, "retry-me", "once")))
	again := decodeAs[chat.MessageView](t, mustResult(t, send(stu, c.ID, "retry-me", "once")))
	stu.Conn.Close()
	stu = h.DialAs(student1)
	afterReconnect := decodeAs[chat.MessageView](t, mustResult(t, send(stu, c.ID, "retry-me", "once")))
	_, body := h.Call(student1, "chat.sendMessage", map[string]any{"session_id": c.ID, "client_msg_id": "retry-me", "body": "once"})
	overHTTP := decodeAs[chat.MessageView](t, json.RawMessage(body))
	for _, m := range []chat.MessageView{again, afterReconnect, overHTTP} {
		if diff := cmp.Diff(first, m); diff != "" {
			t.Fatalf("a retry returned another message (-first +retry):\n%s", diff)
		}
	}
	stored, err := h.App.DB.ChatMessages(t.Context(), c.ID, 0, 100)
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored %d messages, want 1 (%v)", len(stored), err)
	}
	// The burst: 9 more (the first message spent one token, its retries none).
	for i := range 9 {
		mustResult(t, send(stu, c.ID, fmt.Sprint("burst-", i), "burst"))
	}
	f := send(stu, c.ID, "one-too-many", "wait")
	if f.Code != "rate_limited" || f.RetryAfterMs < 900 || f.RetryAfterMs > 1100 {
		t.Fatalf("the 11th message: want rate_limited with retry_after_ms≈1000, got %+v", f)
	}
	mustResult(t, send(stu, c.ID, "burst-0", "burst")) // a retry is never rate limited
	h.Advance(time.Second)
	mustResult(t, send(stu, c.ID, "one-too-many", "wait"))
	if stored, _ := h.App.DB.ChatMessages(t.Context(), c.ID, 0, 100); len(stored) != 11 {
		t.Fatalf("stored %d messages, want 11", len(stored))
	}
}

// Bad messages change nothing: the limits of body and attachments.
func TestChatMessageValidation(t *testing.T) {
	h := bootWithExams(t)
	stu := h.DialAs(student1)
	c := startSupport(t, stu)
	att := func(url, name, mime string, size int) map[string]any {
		return map[string]any{"url": url, "name": name, "size": size, "mime": mime}
	}
	ok := att("https://files.example.org/a.png", "a.png", "image/png", 1234)
	many := make([]any, 11)
	for i := range many {
		many[i] = ok
	}
	cases := []struct {
		name string
		args map[string]any
		code string
	}{
		{"4000 characters of 4 bytes", map[string]any{"body": strings.Repeat("😀", 4000)}, ""},
		{"4001 characters", map[string]any{"body": strings.Repeat("é", 4001)}, "invalid_argument"},
		{"empty", map[string]any{"body": ""}, "invalid_argument"},
		{"blank", map[string]any{"body": " \n\t"}, "invalid_argument"},
		{"control characters", map[string]any{"body": "a\x00b"}, "invalid_argument"},
		{"no client_msg_id", map[string]any{"client_msg_id": ""}, "invalid_argument"},
		{"an attachment", map[string]any{"attachments": []any{ok}}, ""},
		{"http attachment", map[string]any{"attachments": []any{att("http://x.org/a", "a", "image/png", 1)}}, "invalid_argument"},
		{"javascript attachment", map[string]any{"attachments": []any{att("javascript:alert(1)", "a", "text/plain", 1)}}, "invalid_argument"},
		{"nameless attachment", map[string]any{"attachments": []any{att("https://x.org/a", "", "image/png", 1)}}, "invalid_argument"},
		{"negative size", map[string]any{"attachments": []any{att("https://x.org/a", "a", "image/png", -1)}}, "invalid_argument"},
		{"no media type", map[string]any{"attachments": []any{att("https://x.org/a", "a", "png", 1)}}, "invalid_argument"},
		{"11 attachments", map[string]any{"attachments": many}, "invalid_argument"},
		{"bytes, not a reference", map[string]any{"attachments": []any{"aGVsbG8="}}, "invalid_argument"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.Advance(2 * time.Second) // clear of the rate limit
			a := map[string]any{"session_id": c.ID, "client_msg_id": fmt.Sprint("v-", i), "body": "hello"}
			for k, v := range tc.args {
				a[k] = v
			}
			before, _ := h.App.DB.ChatMessages(t.Context(), c.ID, 0, 100)
			f := stu.Call("chat.sendMessage", a)
			after, _ := h.App.DB.ChatMessages(t.Context(), c.ID, 0, 100)
			if tc.code == "" {
				mustResult(t, f)
				if len(after) != len(before)+1 {
					t.Fatal("not stored")
				}
				return
			}
			wantCallError(t, f, tc.code)
			if len(after) != len(before) {
				t.Fatal("a refused message was stored")
			}
		})
	}
	_, body := h.Query(student1, "chat.getMessages", map[string]any{"session_id": c.ID})
	msgs := decodeAs[[]chat.MessageView](t, json.RawMessage(body))
	var atts []chat.Attachment
	json.Unmarshal(msgs[len(msgs)-1].Attachments, &atts)
	if diff := cmp.Diff([]chat.Attachment{{URL: "https://files.example.org/a.png", Name: "a.png", Size: 1234, MIME: "image/png"}}, atts); diff != "" {
		t.Fatalf("attachment (-want +got):\n%s", diff)
	}
}

// Non-participants get forbidden for every chat and presence call and
// query on a chat or scope they do not belong to, over the socket and
// over HTTP, and nothing changes; an unknown chat is not_found.
func TestChatStrangersAreForbidden(t *testing.T) {
	h := bootWithExams(t)
	h.Exam(exam.Registration{ExamID: "listed", Title: "Listed", TutorIDs: []string{tutor1.ID}, Status: exam.Open, StudentIDs: &[]string{student1.ID}})
	stu := h.DialAs(student1)
	support := startSupport(t, stu)
	room := decodeAs[chat.SessionView](t, mustResult(t, stu.Call("chat.startChat", map[string]any{"scope": "exam", "exam_id": "e1"})))
	m := decodeAs[chat.MessageView](t, mustResult(t, send(stu, room.ID, "q-1", "Is question 2 about Mars?")))
	ms := decodeAs[chat.MessageView](t, mustResult(t, send(stu, support.ID, "q-2", "Help")))
	tutor3 := identity.User{ID: "tutor-3", Role: identity.Tutor, Name: "Tia"}

	type call struct {
		fn    string
		query bool
		args  func(sessionID, msgID string) map[string]any
	}
	sid := func(s, _ string) map[string]any { return map[string]any{"session_id": s} }
	calls := []call{
		{"chat.getMessages", true, sid},
		{"chat.sendMessage", false, func(s, _ string) map[string]any {
			return map[string]any{"session_id": s, "client_msg_id": "x", "body": "intrusion"}
		}},
		{"chat.markRead", false, func(s, m string) map[string]any { return map[string]any{"session_id": s, "up_to_message_id": m} }},
		{"chat.setTyping", false, func(s, _ string) map[string]any { return map[string]any{"session_id": s, "typing": true} }},
		{"chat.assignAgent", false, sid},
		{"chat.endChat", false, sid},
		{"presence.touchPresence", false, func(s, _ string) map[string]any { return map[string]any{"scope": presence.ChatScope(s)} }},
		{"presence.setScope", false, func(s, _ string) map[string]any { return map[string]any{"scope": presence.ChatScope(s)} }},
		{"presence.listPresence", true, func(s, _ string) map[string]any { return map[string]any{"scope": presence.ChatScope(s)} }},
	}
	strangers := []struct {
		who     identity.User
		chat    chat.SessionView
		msgID   string
		because string
	}{
		{student2, support, ms.ID, "another student, a support chat"},
		{student2, room, m.ID, "another student of the same exam, an exam room"},
		{tutor1, support, ms.ID, "a tutor, a support chat"},
		{tutor2, room, m.ID, "a tutor of another exam, an exam room"},
		{agent1, room, m.ID, "an agent, an exam room"},
		{tutor3, room, m.ID, "a tutor of no exam, an exam room"},
	}
	before := chatState(t, h, support.ID, room.ID)
	for _, s := range strangers {
		w := h.DialAs(s.who)
		for _, c := range calls {
			t.Run(s.because+"/"+c.fn, func(t *testing.T) {
				args := c.args(s.chat.ID, s.msgID)
				var code int
				var body string
				if c.query {
					w.Send(map[string]any{"type": "sub", "id": "q", "query": c.fn, "args": args})
					wantError(t, w.Next(), "q", "forbidden")
					code, body = h.Query(s.who, c.fn, args)
				} else {
					wantCallError(t, w.Call(c.fn, args), "forbidden")
					code, body = h.Call(s.who, c.fn, args)
				}
				if got := decodeHTTPErr(t, code, body); got != (httpErr{Status: 403, Code: "forbidden"}) {
					t.Fatalf("over HTTP: %+v", got)
				}
			})
		}
	}
	// Scopes beyond chats.
	for _, tc := range []struct {
		who   identity.User
		scope string
	}{{student2, "exam:listed"}, {tutor2, "exam:e1"}, {agent1, "exam:e1"}} {
		for _, fn := range []string{"presence.touchPresence", "presence.setScope", "presence.listPresence"} {
			var code int
			var body string
			if fn == "presence.listPresence" {
				code, body = h.Query(tc.who, fn, map[string]any{"scope": tc.scope})
			} else {
				code, body = h.Call(tc.who, fn, map[string]any{"scope": tc.scope})
			}
			if got := decodeHTTPErr(t, code, body); got.Code != "forbidden" {
				t.Fatalf("%s %s %s: %+v", tc.who.ID, fn, tc.scope, got)
			}
		}
	}
	for _, tc := range []struct {
		who  identity.User
		args map[string]any
		code string
	}{
		{student2, map[string]any{"exam_id": "listed"}, "forbidden"},
		{tutor2, map[string]any{"exam_id": "e1"}, "forbidden"},
		{agent1, map[string]any{"exam_id": "e1"}, "forbidden"},
		{agent1, map[string]any{"scope": "exam"}, "forbidden"},
		{tutor1, map[string]any{"exam_id": "nope"}, "not_found"},
	} {
		code, body := h.Query(tc.who, "chat.listSessions", tc.args)
		if got := decodeHTTPErr(t, code, body); got.Code != tc.code {
			t.Fatalf("%s listSessions %v: %+v", tc.who.ID, tc.args, got)
		}
	}
	for _, tc := range []struct {
		who  identity.User
		args map[string]any
		code string
	}{
		{student2, map[string]any{"scope": "exam", "exam_id": "listed"}, "forbidden"},
		{tutor1, map[string]any{"scope": "exam", "exam_id": "e1"}, "forbidden"},
		{agent1, map[string]any{"scope": "support"}, "forbidden"},
		{student1, map[string]any{"scope": "exam", "exam_id": "nope"}, "not_found"},
	} {
		code, body := h.Call(tc.who, "chat.startChat", tc.args)
		if got := decodeHTTPErr(t, code, body); got.Code != tc.code {
			t.Fatalf("%s startChat %v: %+v", tc.who.ID, tc.args, got)
		}
	}
	if diff := cmp.Diff(before, chatState(t, h, support.ID, room.ID)); diff != "" {
		t.Fatalf("strangers changed the chats (-before +after):\n%s", diff)
	}
	// Unknown chats are not_found, for anyone.
	for _, c := range calls {
		args := c.args("c_nope", "m_nope")
		code, body := h.Call(student1, c.fn, args)
		if c.query {
			code, body = h.Query(student1, c.fn, args)
		}
		if got := decodeHTTPErr(t, code, body); got.Code != "not_found" {
			t.Fatalf("%s on an unknown chat: %+v", c.fn, got)
		}
	}
}

type chatStateT struct {
	Sessions []store.ChatSession
	Messages [][]store.ChatMessage
	Presence [][]store.Presence
}

func chatState(t *testing.T, h *apptest.Harness, ids ...string) chatStateT {
	t.Helper()
	var st chatStateT
	for _, id := range ids {
		s, err := h.App.DB.ChatSession(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		ms, _ := h.App.DB.ChatMessages(t.Context(), id, 0, 1000)
		ps, _ := h.App.DB.PresenceList(t.Context(), presence.ChatScope(id), 1000)
		st.Sessions, st.Messages, st.Presence = append(st.Sessions, s), append(st.Messages, ms), append(st.Presence, ps)
	}
	return st
}

// The queue, an exam's rooms and a student's own chats: each a list whose
// rows change one at a time; claiming takes a chat out of the waiting list.
func TestChatListsPerAudience(t *testing.T) {
	h := bootWithExams(t)
	ag, tut, stu := h.DialAs(agent1), h.DialAs(tutor1), h.DialAs(student1)
	subDeltas(t, ag, "queue", "chat.listSessions", map[string]any{"scope": "support", "status": "waiting"})
	subDeltas(t, ag, "support", "chat.listSessions", map[string]any{})
	subDeltas(t, tut, "rooms", "chat.listSessions", map[string]any{"exam_id": "e1"})
	subDeltas(t, stu, "mine", "chat.listSessions", map[string]any{})
	other := h.DialAs(student2)

	support := startSupport(t, stu)
	got := settle(t, h, ag, tut, stu)
	if diff := cmp.Diff([]map[string]int{{"queue": 1, "support": 1}, {}, {"mine": 1}}, counts(got)); diff != "" {
		t.Fatalf("a support chat starts (-want +got):\n%s", diff)
	}
	room := decodeAs[chat.SessionView](t, mustResult(t, other.Call("chat.startChat", map[string]any{"scope": "exam", "exam_id": "e1"})))
	if again := decodeAs[chat.SessionView](t, mustResult(t, other.Call("chat.startChat", map[string]any{"scope": "exam", "exam_id": "e1"}))); again.ID != room.ID {
		t.Fatalf("starting again gave another room: %s, %s", again.ID, room.ID)
	}
	got = settle(t, h, ag, tut, stu)
	if diff := cmp.Diff([]map[string]int{{}, {"rooms": 1}, {}}, counts(got)); diff != "" {
		t.Fatalf("an exam room starts (-want +got):\n%s", diff)
	}
	mustResult(t, ag.Call("chat.assignAgent", map[string]any{"session_id": support.ID}))
	got = settle(t, h, ag, tut, stu)
	if diff := cmp.Diff([]map[string]int{{"queue": 1, "support": 1}, {}, {"mine": 1}}, counts(got)); diff != "" {
		t.Fatalf("a claim (-want +got):\n%s", diff)
	}
	for _, d := range got[0] {
		if d.ID == "queue" && (len(d.Remove) != 1 || d.Remove[0] != support.ID || len(d.Upsert) != 0) {
			t.Fatalf("the claimed chat leaves the queue: %s", d.Raw)
		}
	}
	// A tutor's answer claims the room for them.
	mustResult(t, send(tut, room.ID, "t-1", "Yes, it is."))
	got = settle(t, h, ag, tut, stu)
	if diff := cmp.Diff([]map[string]int{{}, {"rooms": 1}, {}}, counts(got)); diff != "" {
		t.Fatalf("a tutor's answer (-want +got):\n%s", diff)
	}
	r := decodeAs[chat.SessionView](t, got[1][0].Upsert[0])
	if r.Status != "active" || *r.AssignedTo != tutor1.ID || r.MessageCount != 1 || *r.LastMessage != "Yes, it is." {
		t.Fatalf("the room after the answer: %+v", r)
	}
}

func counts(got [][]apptest.Frame) []map[string]int {
	out := make([]map[string]int, len(got))
	for i, fs := range got {
		out[i] = countByID(fs)
	}
	return out
}

// getMessages keeps the newest limit, oldest first, and pages backwards
// with before; a new message costs a full page one upsert and one removal.
func TestChatMessagesPage(t *testing.T) {
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) {}))
	stu := h.DialAs(student1)
	c := startSupport(t, stu)
	var ids []string
	for i := range 7 {
		h.Advance(time.Second)
		ids = append(ids, decodeAs[chat.MessageView](t, mustResult(t, send(stu, c.ID, fmt.Sprint("p-", i), fmt.Sprint("message ", i)))).ID)
	}
	page := func(args map[string]any) []string {
		t.Helper()
		args["session_id"] = c.ID
		code, body := h.Query(student1, "chat.getMessages", args)
		if code != http.StatusOK {
			t.Fatalf("getMessages %v: %d %s", args, code, body)
		}
		var out []string
		for _, m := range decodeAs[[]chat.MessageView](t, json.RawMessage(body)) {
			out = append(out, m.ID)
		}
		return out
	}
	if diff := cmp.Diff(ids, page(map[string]any{})); diff != "" {
		t.Fatalf("all (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids[4:], page(map[string]any{"limit": 3})); diff != "" {
		t.Fatalf("newest 3 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ids[1:4], page(map[string]any{"limit": 3, "before": ids[4]})); diff != "" {
		t.Fatalf("3 before the 5th (-want +got):\n%s", diff)
	}
	for _, bad := range []map[string]any{{"limit": 0}, {"limit": 201}, {"before": "m_nope"}} {
		bad["session_id"] = c.ID
		code, body := h.Query(student1, "chat.getMessages", bad)
		if got := decodeHTTPErr(t, code, body); got.Code != "invalid_argument" {
			t.Fatalf("%v: %+v", bad, got)
		}
	}
	// A subscriber of the newest 3: a new message is one frame, one row in, one out.
	subDeltas(t, stu, "page", "chat.getMessages", map[string]any{"session_id": c.ID, "limit": 3})
	h.Advance(2 * time.Second)
	m := decodeAs[chat.MessageView](t, mustResult(t, send(stu, c.ID, "p-new", "new")))
	got := settle(t, h, stu)[0]
	if len(got) != 1 || len(got[0].Upsert) != 1 || rowID(got[0].Upsert[0]) != m.ID || !cmp.Equal(got[0].Remove, []string{ids[4]}) {
		t.Fatalf("a new message on a full page: %+v", got)
	}
}

func rowID(raw json.RawMessage) string {
	var r struct {
		ID string `json:"_id"`
	}
	json.Unmarshal(raw, &r)
	return r.ID
}

// endChat ends the chat for both sides and writes its transcript to the
// outbox in the same write; the archive worker delivers it to Supabase
// REST exactly once, with the contract's headers and the chat_messages
// columns. Nothing is sent after it ended.
func TestEndChatArchivesTheTranscriptOnce(t *testing.T) {
	type request struct {
		path, query string
		header      http.Header
		rows        []map[string]any
	}
	var mu sync.Mutex
	var got []request
	supabase := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var rows []map[string]any
		if err := json.Unmarshal(b, &rows); err != nil {
			t.Errorf("body: %s", b)
		}
		mu.Lock()
		got = append(got, request{r.URL.Path, r.URL.RawQuery, r.Header.Clone(), rows})
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer supabase.Close()
	h := bootWithExams(t, apptest.WithConfig(func(c *app.Config) { c.SupabaseURL, c.ServiceRoleKey = supabase.URL, "srk" }))
	stu, tut := h.DialAs(student1), h.DialAs(tutor1)
	room := decodeAs[chat.SessionView](t, mustResult(t, stu.Call("chat.startChat", map[string]any{"scope": "exam", "exam_id": "e1"})))
	subDeltas(t, stu, "mine", "chat.listSessions", map[string]any{"exam_id": "e1"})
	subDeltas(t, tut, "rooms", "chat.listSessions", map[string]any{"exam_id": "e1"})
	q := decodeAs[chat.MessageView](t, mustResult(t, stu.Call("chat.sendMessage", map[string]any{
		"session_id": room.ID, "client_msg_id": "q-1", "body": "Can I use a calculator?",
		"attachments": []any{map[string]any{"url": "https://files.example.org/q.png", "name": "q.png", "size": 10, "mime": "image/png"}},
	})))
	h.Advance(time.Second)
	a := decodeAs[chat.MessageView](t, mustResult(t, send(tut, room.ID, "a-1", "Yes.")))
	mustResult(t, stu.Call("chat.markRead", map[string]any{"session_id": room.ID, "up_to_message_id": a.ID}))
	settle(t, h, stu, tut)

	ended := decodeAs[chat.SessionView](t, mustResult(t, tut.Call("chat.endChat", map[string]any{"session_id": room.ID})))
	if ended.Status != "ended" || ended.EndedAt == nil {
		t.Fatalf("ended: %+v", ended)
	}
	// Both sides see it end.
	for i, fs := range settle(t, h, stu, tut) {
		if len(fs) != 1 || decodeAs[chat.SessionView](t, fs[0].Upsert[0]).Status != "ended" {
			t.Fatalf("socket %d after the end: %+v", i, fs)
		}
	}
	wantCallError(t, send(stu, room.ID, "late", "one more thing"), "conflict")
	mustResult(t, tut.Call("chat.endChat", map[string]any{"session_id": room.ID})) // again: answered, nothing new
	if pending, _ := h.App.DB.OutboxPending(t.Context()); pending != 1 {
		t.Fatalf("%d outbox items, want the one transcript", pending)
	}
	for range 2 {
		if _, err := h.App.Archive.DeliverDue(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d requests to Supabase, want exactly 1", len(got))
	}
	r := got[0]
	if r.path != "/rest/v1/chat_messages" || r.query != "on_conflict=id" || r.header.Get("apikey") != "srk" ||
		r.header.Get("Authorization") != "Bearer srk" || !strings.Contains(r.header.Get("Prefer"), "resolution=merge-duplicates") {
		t.Fatalf("request %s?%s %v", r.path, r.query, r.header)
	}
	want := []map[string]any{
		{"id": q.ID, "session_id": room.ID, "scope": "exam", "exam_id": "e1", "student_id": student1.ID,
			"client_msg_id": "q-1", "sender_id": student1.ID, "sender_name": student1.Name, "sender_role": "student",
			"body": "Can I use a calculator?", "read_by": []any{tutor1.ID}, "created_at": "2026-03-02T09:00:00.000Z",
			"attachments": []any{map[string]any{"url": "https://files.example.org/q.png", "name": "q.png", "size": 10.0, "mime": "image/png"}}},
		{"id": a.ID, "session_id": room.ID, "scope": "exam", "exam_id": "e1", "student_id": student1.ID,
			"client_msg_id": "a-1", "sender_id": tutor1.ID, "sender_name": tutor1.Name, "sender_role": "tutor",
			"body": "Yes.", "read_by": []any{student1.ID}, "created_at": "2026-03-02T09:00:01.000Z", "attachments": []any{}},
	}
	if diff := cmp.Diff(want, r.rows); diff != "" {
		t.Fatalf("transcript rows (-want +got):\n%s", diff)
	}
}

// wantCallError fails unless f answers a call with an error of code.
func wantCallError(t *testing.T, f apptest.Frame, code string) {
	t.Helper()
	wantError(t, f, f.ID, code)
}

// An admin assigns a chat to an agent (any id: the token decides when they
// act); the agent it was taken from reads but no longer writes. An exam
// room is assigned only to a tutor of its exam, and a tutor taken off the
// exam loses its rooms at once.
func TestChatAdminAssignsAndRightsFollowTheExam(t *testing.T) {
	h := bootWithExams(t)
	stu, ag1, ag2, boss := h.DialAs(student1), h.DialAs(agent1), h.DialAs(agent2), h.DialAs(admin)
	c := startSupport(t, stu)
	mustResult(t, ag1.Call("chat.assignAgent", map[string]any{"session_id": c.ID}))
	wantCallError(t, ag2.Call("chat.assignAgent", map[string]any{"session_id": c.ID}), "conflict")
	wantCallError(t, ag1.Call("chat.assignAgent", map[string]any{"session_id": c.ID, "agent_id": agent2.ID}), "forbidden")
	got := decodeAs[chat.SessionView](t, mustResult(t, boss.Call("chat.assignAgent", map[string]any{"session_id": c.ID, "agent_id": agent2.ID})))
	if got.Status != "active" || *got.AssignedTo != agent2.ID {
		t.Fatalf("reassigned: %+v", got)
	}
	mustResult(t, send(ag2, c.ID, "a2-1", "I take over from here."))
	wantCallError(t, send(ag1, c.ID, "a1-1", "Me too?"), "forbidden")
	ag1.Sub("m", "chat.getMessages", map[string]any{"session_id": c.ID}) // still reads
	// Named without an agent's token: nothing.
	mustResult(t, boss.Call("chat.assignAgent", map[string]any{"session_id": c.ID, "agent_id": student2.ID}))
	wantCallError(t, send(h.DialAs(student2), c.ID, "s2-1", "hijack"), "forbidden")

	room := decodeAs[chat.SessionView](t, mustResult(t, stu.Call("chat.startChat", map[string]any{"scope": "exam", "exam_id": "e1"})))
	wantCallError(t, boss.Call("chat.assignAgent", map[string]any{"session_id": room.ID, "agent_id": tutor2.ID}), "invalid_argument")
	mustResult(t, boss.Call("chat.assignAgent", map[string]any{"session_id": room.ID, "agent_id": tutor1.ID}))
	tut := h.DialAs(tutor1)
	tut.Sub("m", "chat.getMessages", map[string]any{"session_id": room.ID})
	tut.Sub("l", "chat.listSessions", map[string]any{"exam_id": "e1"})
	h.Exam(exam.Registration{ExamID: "e1", Title: "Exam one", TutorIDs: []string{tutor2.ID}, Status: exam.Open})
	ended := map[string]string{}
	for range 2 {
		f := tut.Next()
		ended[f.ID] = f.Code
	}
	if diff := cmp.Diff(map[string]string{"m": "forbidden", "l": "forbidden"}, ended); diff != "" {
		t.Fatalf("the removed tutor's views (-want +got):\n%s", diff)
	}
	wantCallError(t, send(tut, room.ID, "t-1", "still here?"), "forbidden")
	mustResult(t, send(h.DialAs(tutor2), room.ID, "t2-1", "I am the tutor now."))
}
