package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jonboulle/clockwork"

	"invigil/store"
	"invigil/store/storetest"
)

// Messages are numbered in their chat; read_by comes from each reader's
// mark and never names the sender; a client_msg_id is stored once per
// sender and chat.
func TestChatMessagesAndReceipts(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	ctx := context.Background()
	var chat store.ChatSession
	mustUpdate(t, db, func(tx *store.Tx) (err error) {
		chat, err = tx.CreateChat(store.ChatSession{Scope: "support", StudentID: "s1", StudentName: "Sam"})
		return err
	})
	if chat.Status != store.ChatWaiting || chat.LastSeq != 0 || len(chat.Reads) != 0 {
		t.Fatalf("new chat: %+v", chat)
	}
	send := func(sender, role, client string) store.ChatMessage {
		t.Helper()
		var m store.ChatMessage
		mustUpdate(t, db, func(tx *store.Tx) (err error) {
			m, err = tx.AddChatMessage(store.ChatMessage{SessionID: chat.ID, ClientMsgID: client, SenderID: sender,
				SenderName: sender, SenderRole: role, Body: "hi from " + sender, Attachments: "[]"}, "hi")
			return err
		})
		return m
	}
	m1 := send("s1", "student", "a")
	clock.Advance(time.Second)
	m2 := send("agent-1", "agent", "a") // the same client id from another sender is another message
	m3 := send("s1", "student", "b")
	if m1.Seq != 1 || m2.Seq != 2 || m3.Seq != 3 {
		t.Fatalf("seqs %d %d %d", m1.Seq, m2.Seq, m3.Seq)
	}
	err := db.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.AddChatMessage(store.ChatMessage{SessionID: chat.ID, ClientMsgID: "a", SenderID: "s1",
			SenderName: "s1", SenderRole: "student", Body: "again", Attachments: "[]"}, "again")
		return err
	})
	if err == nil {
		t.Fatal("a second message under the same client_msg_id was stored")
	}
	err = db.Read(ctx, func(r *store.Reader) error {
		m, err := r.ChatMessageByClientID(ctx, chat.ID, "s1", "a")
		if err == nil && m.ID != m1.ID {
			t.Errorf("by client id: %s, want %s", m.ID, m1.ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// The agent reads up to m3: m1 and m3 gain the agent; the agent's own m2 does not.
	var ids []string
	mustUpdate(t, db, func(tx *store.Tx) error {
		from, moved, err := tx.MarkChatRead(chat.ID, "agent-1", 3)
		if err != nil || !moved || from != 0 {
			t.Errorf("mark: from %d moved %v err %v", from, moved, err)
		}
		ids, err = tx.Reader().ChatMessageIDs(ctx, chat.ID, from, 3, "agent-1")
		return err
	})
	if diff := cmp.Diff([]string{m1.ID, m3.ID}, ids, sortStrings()); diff != "" {
		t.Fatalf("rows a receipt changes (-want +got):\n%s", diff)
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		if _, moved, err := tx.MarkChatRead(chat.ID, "agent-1", 2); err != nil || moved {
			t.Errorf("a lower mark moved: %v %v", moved, err)
		}
		_, _, err := tx.MarkChatRead(chat.ID, "s1", 2)
		return err
	})
	msgs, err := db.ChatMessages(ctx, chat.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	readBy := map[int64][]string{}
	for _, m := range msgs {
		readBy[m.Seq] = m.ReadBy
	}
	want := map[int64][]string{1: {"agent-1"}, 2: {"s1"}, 3: {"agent-1"}}
	if diff := cmp.Diff(want, readBy); diff != "" {
		t.Fatalf("read_by (-want +got):\n%s", diff)
	}
	// Paging backwards: before seq 3, the newest 1.
	if page, err := db.ChatMessages(ctx, chat.ID, 3, 1); err != nil || len(page) != 1 || page[0].ID != m2.ID {
		t.Fatalf("page before 3: %+v %v", page, err)
	}
	s, err := db.ChatSession(ctx, chat.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.LastSeq != 3 || s.LastSenderID != "s1" || s.LastMessageAt != "2026-03-02T09:00:01.000Z" ||
		!cmp.Equal(s.Reads, map[string]int64{"agent-1": 3, "s1": 2}) {
		t.Fatalf("chat after messages: %+v", s)
	}
}

// An ended chat is purged after the cutoff only once its transcript was
// delivered, and its messages and receipts go with it.
func TestPurgeEndedChats(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	ctx := context.Background()
	var chat store.ChatSession
	mustUpdate(t, db, func(tx *store.Tx) (err error) {
		if chat, err = tx.CreateChat(store.ChatSession{Scope: "exam", ExamID: "e1", StudentID: "s1", StudentName: "Sam"}); err != nil {
			return err
		}
		if _, err = tx.AddChatMessage(store.ChatMessage{SessionID: chat.ID, ClientMsgID: "a", SenderID: "s1",
			SenderName: "Sam", SenderRole: "student", Body: "?", Attachments: "[]"}, "?"); err != nil {
			return err
		}
		if _, _, err = tx.MarkChatRead(chat.ID, "t1", 1); err != nil {
			return err
		}
		if err = tx.EndChat(chat.ID); err != nil {
			return err
		}
		if err = tx.Enqueue("chat_messages", "id", "[]"); err != nil {
			return err
		}
		return tx.NoteChatTranscript(chat.ID)
	})
	purge := func() int {
		t.Helper()
		var n int
		mustUpdate(t, db, func(tx *store.Tx) error {
			gone, err := tx.PurgeEndedChats(tx.Now().Add(-time.Hour), 100)
			n = len(gone)
			return err
		})
		return n
	}
	clock.Advance(2 * time.Hour)
	if n := purge(); n != 0 {
		t.Fatalf("purged %d chats whose transcript is undelivered", n)
	}
	due, err := db.DueOutbox(ctx, clock.Now(), []string{"supabase"}, nil, 10)
	if err != nil || len(due) != 1 {
		t.Fatalf("outbox: %+v %v", due, err)
	}
	mustUpdate(t, db, func(tx *store.Tx) error { return tx.OutboxDelivered(due[0].ID, 201) })
	if n := purge(); n != 0 {
		t.Fatalf("purged %d chats delivered less than the retention ago", n)
	}
	clock.Advance(2 * time.Hour)
	if n := purge(); n != 1 {
		t.Fatalf("purged %d, want the chat delivered a retention ago", n)
	}
	if _, err := db.ChatSession(ctx, chat.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the chat is still there: %v", err)
	}
	if msgs, err := db.ChatMessages(ctx, chat.ID, 0, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("its messages are still there: %+v %v", msgs, err)
	}
}

// Typing flags expire on their own; presence rows seen before a cutoff go.
func TestPresenceTypingAndExpiry(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	db := storetest.MustOpen(t, clock)
	ctx := context.Background()
	k := store.PresenceKey{Scope: "chat:c1", UserID: "u1"}
	mustUpdate(t, db, func(tx *store.Tx) error {
		return tx.TouchPresence(store.Presence{Scope: k.Scope, UserID: k.UserID, DisplayName: "Una", Role: "student",
			TypingUntil: store.FormatTime(tx.Now().Add(6 * time.Second))})
	})
	clock.Advance(5 * time.Second)
	mustUpdate(t, db, func(tx *store.Tx) error {
		if keys, err := tx.ExpireTyping(); err != nil || len(keys) != 0 {
			t.Errorf("expired early: %v %v", keys, err)
		}
		return nil
	})
	clock.Advance(time.Second)
	mustUpdate(t, db, func(tx *store.Tx) error {
		keys, err := tx.ExpireTyping()
		if diff := cmp.Diff([]store.PresenceKey{k}, keys); diff != "" || err != nil {
			t.Errorf("expired (-want +got):\n%s %v", diff, err)
		}
		return nil
	})
	rows, err := db.PresenceList(ctx, k.Scope, 10)
	if err != nil || len(rows) != 1 || rows[0].TypingUntil != "" || !rows[0].Online {
		t.Fatalf("after expiry: %+v %v", rows, err)
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		if off, err := tx.SetOffline(k); err != nil || !off {
			t.Errorf("offline: %v %v", off, err)
		}
		return nil
	})
	clock.Advance(time.Minute)
	stale, err := db.StalePresence(ctx, clock.Now().Add(-30*time.Second), store.Presence{}, 10)
	if err != nil || len(stale) != 1 {
		t.Fatalf("stale: %v %v", stale, err)
	}
	mustUpdate(t, db, func(tx *store.Tx) error {
		if gone, err := tx.DeletePresence(k, clock.Now().Add(-30*time.Second)); err != nil || !gone {
			t.Errorf("delete: %v %v", gone, err)
		}
		return nil
	})
	if rows, _ := db.PresenceList(ctx, k.Scope, 10); len(rows) != 0 {
		t.Fatalf("rows left: %+v", rows)
	}
}

func sortStrings() cmp.Option {
	return cmpopts.SortSlices(func(a, b string) bool { return a < b })
}
