package demo_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"invigil/app/chat"
	"invigil/app/demo"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/presence"
	"invigil/store"
	"invigil/store/storetest"
)

// The simulated chats, driven by a fake clock: support chats wait in the
// queue at once, exam rooms appear, and a visitor answers the agent who
// claims their chat.
func TestSimulatedChatsKeepTheConsoleAlive(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	e := engine.New(db, engine.Options{Clock: clock})
	t.Cleanup(e.Close)
	reg := exam.NewRegistry(db)
	var chats *chat.Service
	pres := presence.New(db, reg, presence.Config{ChatAccess: func(ctx context.Context, u identity.User, id string) ([]string, error) {
		return chats.Access(ctx, u, id)
	}})
	chats = chat.New(db, reg, pres, chat.Config{Clock: clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	pres.Register(e)
	chats.Register(e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := demo.Seed(ctx, reg); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		demo.SimulateChats(ctx, e, clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	const chatters = 7 // six visitors and the simulated agent, each waiting on the clock once
	step := func() {
		t.Helper()
		wctx, stop := context.WithTimeout(ctx, 10*time.Second)
		defer stop()
		if err := e.Settle(wctx); err != nil {
			t.Fatal(err)
		}
		if err := clock.BlockUntilContext(wctx, chatters); err != nil {
			t.Fatal("the simulation never came to rest")
		}
		clock.Advance(500 * time.Millisecond)
	}
	list := func(f store.ChatFilter) []store.ChatSession {
		t.Helper()
		ss, err := db.ChatSessions(ctx, f, 100)
		if err != nil {
			t.Fatal(err)
		}
		return ss
	}
	until := func(what string, steps int, ok func() bool) {
		t.Helper()
		for range steps {
			if ok() {
				return
			}
			step()
		}
		t.Fatalf("%s: not within %d steps", what, steps)
	}
	until("two support chats waiting with a question", 20, func() bool {
		n := 0
		for _, s := range list(store.ChatFilter{Scope: "support", Status: "waiting"}) {
			if s.LastSeq > 0 {
				n++
			}
		}
		return n >= 2
	})
	agent := engine.Caller{User: identity.User{ID: "agent-1", Role: identity.Agent, Name: "Agent One"}, Conn: 7}
	waiting := list(store.ChatFilter{Scope: "support", Status: "waiting"})
	target := waiting[len(waiting)-1]
	call := func(fn string, args map[string]any) {
		t.Helper()
		raw, _ := json.Marshal(args)
		if _, err := e.Call(ctx, agent, fn, raw); err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
	}
	call("chat.assignAgent", map[string]any{"session_id": target.ID})
	call("chat.sendMessage", map[string]any{"session_id": target.ID, "client_msg_id": "hi", "body": "Hi! How can I help?"})
	until("the visitor answers the agent", 60, func() bool {
		s, _ := db.ChatSession(ctx, target.ID)
		return s.LastSeq >= 3 && s.LastSenderID == target.StudentID && s.Reads[target.StudentID] >= 2
	})
	until("an exam room with a question", 200, func() bool {
		for _, s := range list(store.ChatFilter{Scope: "exam", ExamID: demo.ExamID}) {
			if s.LastSeq > 0 {
				return true
			}
		}
		return false
	})
	cancel()
	clock.Advance(time.Hour)
	<-done
}
