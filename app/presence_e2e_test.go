package app_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"invigil/app/apptest"
	"invigil/app/presence"
)

// presenceOf reads what a listPresence subscriber holds, as user → online
// (and typing).
func presenceOf(t *testing.T, v *apptest.View) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range decodeAs[[]presence.View](t, v.JSON()) {
		state := "offline"
		if p.Online {
			state = "online"
		}
		if p.IsTyping {
			state += "+typing"
		}
		out[p.UserID] = state
	}
	return out
}

// watchPresence subscribes w to a scope's presence and returns a function
// that waits for the next frame and gives what w then holds.
func watchPresence(t *testing.T, w *apptest.WS, scope string) (next func() map[string]string, held *apptest.View) {
	t.Helper()
	v := &apptest.View{}
	v.Apply(apptest.Frame{Type: "data", Value: subDeltas(t, w, "pres", "presence.listPresence", map[string]any{"scope": scope})})
	return func() map[string]string {
		t.Helper()
		f := w.Next()
		if err := v.Apply(f); err != nil {
			t.Fatalf("%v: %s", err, f.Raw)
		}
		return presenceOf(t, v)
	}, v
}

// A user is online while a socket of theirs carries the scope; when the
// last one closes, the others see online:false within 2 s (at once, in
// fact: the close is the signal, not a timer).
func TestPresenceOfflineWhenTheLastSocketCloses(t *testing.T) {
	h := bootWithExams(t)
	watcher := h.DialAs(tutor1)
	next, _ := watchPresence(t, watcher, "exam:e1")
	tab1, tab2 := h.DialAs(student1), h.DialAs(student1)
	mustResult(t, tab1.Call("presence.touchPresence", map[string]any{"scope": "exam:e1"}))
	if diff := cmp.Diff(map[string]string{student1.ID: "online"}, next()); diff != "" {
		t.Fatalf("after a touch (-want +got):\n%s", diff)
	}
	h.Advance(time.Second)
	mustResult(t, tab2.Call("presence.touchPresence", map[string]any{"scope": "exam:e1"}))
	next() // last_seen moved
	tab1.Conn.Close()
	if extra := watcher.Quiet(300 * time.Millisecond); len(extra) > 0 {
		t.Fatalf("closing one of two tabs changed presence: %+v", extra)
	}
	closed := time.Now()
	tab2.Conn.Close()
	if diff := cmp.Diff(map[string]string{student1.ID: "offline"}, next()); diff != "" {
		t.Fatalf("after the last tab closed (-want +got):\n%s", diff)
	}
	if took := time.Since(closed); took > 2*time.Second {
		t.Fatalf("offline shown %s after the last socket closed", took)
	}
	t.Logf("last socket closed → online:false seen in %s", time.Since(closed).Round(time.Millisecond))
	// An offline row expires after INVIGIL_PRESENCE_TTL.
	// (The app's own expiry job runs as the clock moves, too: what counts
	// is what the watcher sees.)
	ttl := h.App.Config.PresenceTTL
	h.Advance(ttl - time.Second)
	expireStale(t, h)
	if early := watcher.Quiet(150 * time.Millisecond); len(early) > 0 {
		t.Fatalf("expired before the TTL: %+v", early)
	}
	h.Advance(2 * time.Second)
	expireStale(t, h)
	if diff := cmp.Diff(map[string]string{}, next()); diff != "" {
		t.Fatalf("after the TTL (-want +got):\n%s", diff)
	}
}

// setScope moves this socket's presence: the scope it entered last shows
// it offline (no other socket of theirs carries it), the new one online. A
// socket is never expired however quiet; an HTTP touch expires after the TTL.
func TestPresenceSetScopeAndExpiry(t *testing.T) {
	h := bootWithExams(t)
	watcher := h.DialAs(tutor1)
	nextGlobal, _ := watchPresence(t, watcher, "global")
	examWatch := h.DialAs(tutor1)
	nextExam, _ := watchPresence(t, examWatch, "exam:e1")

	stu := h.DialAs(student1)
	mustResult(t, stu.Call("presence.setScope", map[string]any{"scope": "global"}))
	if diff := cmp.Diff(map[string]string{student1.ID: "online"}, nextGlobal()); diff != "" {
		t.Fatalf("in global (-want +got):\n%s", diff)
	}
	mustResult(t, stu.Call("presence.setScope", map[string]any{"scope": "exam:e1"}))
	if diff := cmp.Diff(map[string]string{student1.ID: "offline"}, nextGlobal()); diff != "" {
		t.Fatalf("global after the move (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{student1.ID: "online"}, nextExam()); diff != "" {
		t.Fatalf("exam after the move (-want +got):\n%s", diff)
	}
	// HTTP: present for the TTL, then gone; the quiet socket stays.
	if code, body := h.Call(student2, "presence.touchPresence", map[string]any{"scope": "exam:e1", "display_name": "Sue S."}); code != 200 {
		t.Fatalf("touch over HTTP: %d %s", code, body)
	}
	if diff := cmp.Diff(map[string]string{student1.ID: "online", student2.ID: "online"}, nextExam()); diff != "" {
		t.Fatalf("exam with an HTTP user (-want +got):\n%s", diff)
	}
	h.Advance(h.App.Config.PresenceTTL + time.Second)
	expireStale(t, h) // the HTTP user in exam:e1 (and student-1's offline row in global)
	if diff := cmp.Diff(map[string]string{student1.ID: "online"}, nextExam()); diff != "" {
		t.Fatalf("exam after the TTL (-want +got):\n%s", diff)
	}
	_, body := h.Query(tutor1, "presence.listPresence", map[string]any{"scope": "exam:e1"})
	rows := decodeAs[[]presence.View](t, json.RawMessage(body))
	if len(rows) != 1 || rows[0].DisplayName != student1.Name || rows[0].Role != "student" || rows[0].ID != student1.ID {
		t.Fatalf("rows: %+v", rows)
	}
	for _, bad := range []string{"", "exam:", "chat:", "room:1", "global:x"} {
		code, body := h.Call(student1, "presence.touchPresence", map[string]any{"scope": bad})
		if got := decodeHTTPErr(t, code, body); got.Code != "invalid_argument" && got.Code != "not_found" {
			t.Fatalf("scope %q: %+v", bad, got)
		}
	}
}

// A typing flag clears itself after INVIGIL_TYPING_TTL, not before.
func TestTypingExpires(t *testing.T) {
	h := bootWithExams(t)
	stu := h.DialAs(student1)
	c := startSupport(t, stu)
	ag := h.DialAs(agent1)
	mustResult(t, ag.Call("chat.assignAgent", map[string]any{"session_id": c.ID}))
	next, _ := watchPresence(t, ag, presence.ChatScope(c.ID))
	mustResult(t, stu.Call("chat.setTyping", map[string]any{"session_id": c.ID, "typing": true}))
	if diff := cmp.Diff(map[string]string{student1.ID: "online+typing"}, next()); diff != "" {
		t.Fatalf("typing (-want +got):\n%s", diff)
	}
	h.Advance(h.App.Config.TypingTTL - time.Millisecond)
	expireTyping(t, h)
	if early := ag.Quiet(150 * time.Millisecond); len(early) > 0 {
		t.Fatalf("the flag cleared before its TTL: %+v", early)
	}
	h.Advance(time.Millisecond)
	expireTyping(t, h)
	if diff := cmp.Diff(map[string]string{student1.ID: "online"}, next()); diff != "" {
		t.Fatalf("after the TTL (-want +got):\n%s", diff)
	}
	// Closing the socket clears it at once, with the presence.
	mustResult(t, stu.Call("chat.setTyping", map[string]any{"session_id": c.ID, "typing": true}))
	next()
	stu.Conn.Close()
	if diff := cmp.Diff(map[string]string{student1.ID: "offline"}, next()); diff != "" {
		t.Fatalf("after the close (-want +got):\n%s", diff)
	}
}

// expireStale and expireTyping run the expiry jobs now. The app's
// scheduler may run them too as the fake clock moves, so the tests judge
// by what subscribers see, not by these counts.
func expireStale(t *testing.T, h *apptest.Harness) {
	t.Helper()
	if _, err := h.App.Presence.ExpireStale(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func expireTyping(t *testing.T, h *apptest.Harness) {
	t.Helper()
	if _, err := h.App.Presence.ExpireTyping(t.Context()); err != nil {
		t.Fatal(err)
	}
}
