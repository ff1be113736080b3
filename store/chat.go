package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Chat statuses.
const (
	ChatWaiting = "waiting"
	ChatActive  = "active"
	ChatEnded   = "ended"
)

// ChatSession is one chat as stored: a support chat or an exam room.
type ChatSession struct {
	ID            string
	Scope         string // "support" or "exam"
	ExamID        string // "" for support chats
	StudentID     string // who started it
	StudentName   string
	AssignedTo    string // "" while nobody answers it
	AssignedName  string
	Status        string
	CreatedAt     string
	ActivityAt    string // newest of start, message, claim and end
	LastMessageAt string // "" before the first message
	LastSeq       int64  // the last message's seq (messages so far)
	LastSenderID  string
	LastPreview   string
	EndedAt       string
	// Reads is each reader's mark: every message up to that seq is read.
	Reads map[string]int64
}

// ChatMessage is one message as stored, with who (besides its sender) has
// read it.
type ChatMessage struct {
	ID          string
	SessionID   string
	Seq         int64 // 1, 2, … in its chat
	ClientMsgID string
	SenderID    string
	SenderName  string
	SenderRole  string
	Body        string
	Attachments string // JSON array
	CreatedAt   string
	ReadBy      []string // user ids, sorted; never the sender
}

// ChatFilter narrows a list of chats; empty fields do not filter.
type ChatFilter struct {
	Scope, ExamID, StudentID, Status string
}

const chatSessionColumns = `s.id, s.scope, coalesce(s.exam_id, ''), s.student_id, s.student_name,
	coalesce(s.assigned_to, ''), coalesce(s.assigned_name, ''), s.status, s.created_at, s.activity_at,
	coalesce(s.last_message_at, ''), s.last_seq, coalesce(s.last_sender_id, ''), coalesce(s.last_preview, ''),
	coalesce(s.ended_at, ''),
	(SELECT json_group_object(r.user_id, r.up_to_seq) FROM chat_reads r WHERE r.session_id = s.id)`

func scanChatSession(sc scanner) (ChatSession, error) {
	var s ChatSession
	var reads string
	err := sc.Scan(&s.ID, &s.Scope, &s.ExamID, &s.StudentID, &s.StudentName, &s.AssignedTo, &s.AssignedName,
		&s.Status, &s.CreatedAt, &s.ActivityAt, &s.LastMessageAt, &s.LastSeq, &s.LastSenderID, &s.LastPreview,
		&s.EndedAt, &reads)
	if err != nil {
		return s, err
	}
	s.Reads = map[string]int64{}
	if err := json.Unmarshal([]byte(reads), &s.Reads); err != nil {
		return s, fmt.Errorf("chat %s reads: %w", s.ID, err)
	}
	return s, nil
}

// read_by is computed from the receipts: a reader whose mark reached the
// message, other than its sender, in user id order.
const chatMessageColumns = `m.id, m.session_id, m.seq, m.client_msg_id, m.sender_id, m.sender_name, m.sender_role,
	m.body, m.attachments, m.created_at,
	(SELECT json_group_array(r.user_id ORDER BY r.user_id) FROM chat_reads r
	 WHERE r.session_id = m.session_id AND r.up_to_seq >= m.seq AND r.user_id <> m.sender_id)`

func scanChatMessage(sc scanner) (ChatMessage, error) {
	var m ChatMessage
	var readBy string
	err := sc.Scan(&m.ID, &m.SessionID, &m.Seq, &m.ClientMsgID, &m.SenderID, &m.SenderName, &m.SenderRole,
		&m.Body, &m.Attachments, &m.CreatedAt, &readBy)
	if err != nil {
		return m, err
	}
	m.ReadBy = []string{}
	if err := json.Unmarshal([]byte(readBy), &m.ReadBy); err != nil {
		return m, fmt.Errorf("message %s read_by: %w", m.ID, err)
	}
	return m, nil
}

// ChatSession reads one chat; ErrNotFound if there is none.
func (r *Reader) ChatSession(ctx context.Context, id string) (ChatSession, error) {
	ctx = r.ctx(ctx)
	s, err := scanChatSession(r.q.QueryRowContext(ctx, `SELECT `+chatSessionColumns+` FROM chat_sessions s WHERE s.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return ChatSession{}, ErrNotFound
	}
	if err != nil {
		return ChatSession{}, fmt.Errorf("read chat %s: %w", id, err)
	}
	return s, nil
}

// ChatSession reads one chat from the reader pool.
func (db *DB) ChatSession(ctx context.Context, id string) (ChatSession, error) {
	return db.reader().ChatSession(ctx, id)
}

// OpenChat finds the chat a student started in scope (and exam) that has
// not ended; ErrNotFound if there is none.
func (r *Reader) OpenChat(ctx context.Context, studentID, scope, examID string) (ChatSession, error) {
	ctx = r.ctx(ctx)
	s, err := scanChatSession(r.q.QueryRowContext(ctx, `SELECT `+chatSessionColumns+` FROM chat_sessions s
		WHERE s.student_id = ? AND s.scope = ? AND coalesce(s.exam_id, '') = ? AND s.status <> 'ended'
		ORDER BY s.created_at DESC LIMIT 1`, studentID, scope, examID))
	if errors.Is(err, sql.ErrNoRows) {
		return ChatSession{}, ErrNotFound
	}
	if err != nil {
		return ChatSession{}, fmt.Errorf("read open chat of %s: %w", studentID, err)
	}
	return s, nil
}

// where renders a filter as SQL conditions on chat_sessions s.
func (f ChatFilter) where() (string, []any) {
	conds := []string{"1"}
	var args []any
	for _, c := range []struct{ col, v string }{
		{"s.scope", f.Scope}, {"s.exam_id", f.ExamID}, {"s.student_id", f.StudentID}, {"s.status", f.Status},
	} {
		if c.v != "" {
			conds = append(conds, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	return strings.Join(conds, " AND "), args
}

// ChatSessions reads the chats that pass the filter, the newest activity
// first, at most limit.
func (db *DB) ChatSessions(ctx context.Context, f ChatFilter, limit int) ([]ChatSession, error) {
	where, args := f.where()
	return query(ctx, db.read, scanChatSession, `SELECT `+chatSessionColumns+` FROM chat_sessions s WHERE `+where+`
		ORDER BY s.activity_at DESC, s.id DESC LIMIT ?`, append(args, limit)...)
}

// ChatSessionsByID reads the chats among ids that pass the filter.
func (db *DB) ChatSessionsByID(ctx context.Context, f ChatFilter, ids []string) ([]ChatSession, error) {
	where, args := f.where()
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	// The filter's columns behind a unary +: the ids drive the lookup.
	where = strings.ReplaceAll(where, "s.", "+s.")
	return query(ctx, db.read, scanChatSession, chatSessionsByIDSQL(where), append([]any{string(b)}, args...)...)
}

// ChatMessages reads a chat's newest limit messages (those before seq
// before, when it is positive), in any order.
func (r *Reader) ChatMessages(ctx context.Context, sessionID string, before int64, limit int) ([]ChatMessage, error) {
	ctx = r.ctx(ctx)
	if before <= 0 {
		before = 1 << 62
	}
	return query(ctx, r.q, scanChatMessage, `SELECT `+chatMessageColumns+` FROM chat_messages m
		WHERE m.session_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?`, sessionID, before, limit)
}

// ChatMessages reads as Reader.ChatMessages does, from the reader pool.
func (db *DB) ChatMessages(ctx context.Context, sessionID string, before int64, limit int) ([]ChatMessage, error) {
	return db.reader().ChatMessages(ctx, sessionID, before, limit)
}

// ChatMessagesByID reads the chat's messages among ids (those before seq
// before, when it is positive).
func (db *DB) ChatMessagesByID(ctx context.Context, sessionID string, before int64, ids []string) ([]ChatMessage, error) {
	if before <= 0 {
		before = 1 << 62
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return nil, err
	}
	return query(ctx, db.read, scanChatMessage, chatMessagesByIDSQL, sessionID, before, string(b))
}

// ChatTranscript reads every message of a chat, in order.
func (r *Reader) ChatTranscript(ctx context.Context, sessionID string) ([]ChatMessage, error) {
	ctx = r.ctx(ctx)
	return query(ctx, r.q, scanChatMessage, `SELECT `+chatMessageColumns+` FROM chat_messages m
		WHERE m.session_id = ? ORDER BY m.seq`, sessionID)
}

// ChatMessage reads one message of a chat; ErrNotFound if the chat has no
// such message.
func (r *Reader) ChatMessage(ctx context.Context, sessionID, id string) (ChatMessage, error) {
	ctx = r.ctx(ctx)
	m, err := scanChatMessage(r.q.QueryRowContext(ctx, `SELECT `+chatMessageColumns+` FROM chat_messages m
		WHERE m.session_id = ? AND m.id = ?`, sessionID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return ChatMessage{}, ErrNotFound
	}
	if err != nil {
		return ChatMessage{}, fmt.Errorf("read message %s: %w", id, err)
	}
	return m, nil
}

// ChatMessage reads one message from the reader pool.
func (db *DB) ChatMessage(ctx context.Context, sessionID, id string) (ChatMessage, error) {
	return db.reader().ChatMessage(ctx, sessionID, id)
}

// ChatMessageByClientID finds the message a sender already sent under
// clientMsgID in a chat; ErrNotFound if there is none.
func (r *Reader) ChatMessageByClientID(ctx context.Context, sessionID, senderID, clientMsgID string) (ChatMessage, error) {
	ctx = r.ctx(ctx)
	m, err := scanChatMessage(r.q.QueryRowContext(ctx, `SELECT `+chatMessageColumns+` FROM chat_messages m
		WHERE m.session_id = ? AND m.sender_id = ? AND m.client_msg_id = ?`, sessionID, senderID, clientMsgID))
	if errors.Is(err, sql.ErrNoRows) {
		return ChatMessage{}, ErrNotFound
	}
	if err != nil {
		return ChatMessage{}, fmt.Errorf("read message %s/%s: %w", sessionID, clientMsgID, err)
	}
	return m, nil
}

// ChatMessageIDs lists the ids of a chat's messages with from < seq <= to
// not sent by notSender: the messages whose read_by a receipt of
// notSender's changes.
func (r *Reader) ChatMessageIDs(ctx context.Context, sessionID string, from, to int64, notSender string) ([]string, error) {
	ctx = r.ctx(ctx)
	return query(ctx, r.q, func(sc scanner) (string, error) {
		var id string
		return id, sc.Scan(&id)
	}, `SELECT id FROM chat_messages WHERE session_id = ? AND seq > ? AND seq <= ? AND sender_id <> ?`,
		sessionID, from, to, notSender)
}

// query runs a statement and scans every row.
func query[T any](ctx context.Context, q queryer, scan func(scanner) (T, error), text string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, text, args...)
	if err != nil {
		return nil, fmt.Errorf("store: query: %w", err)
	}
	return collectRows(rows, scan)
}

// CreateChat stores a new chat, waiting, started now.
func (tx *Tx) CreateChat(s ChatSession) (ChatSession, error) {
	now := FormatTime(tx.now)
	s.ID = NewID("c_", tx.now)
	_, err := tx.exec(`INSERT INTO chat_sessions (id, scope, exam_id, student_id, student_name, status, created_at, activity_at)
		VALUES (?, ?, ?, ?, ?, 'waiting', ?, ?)`, s.ID, s.Scope, nullString(s.ExamID), s.StudentID, s.StudentName, now, now)
	if err != nil {
		return ChatSession{}, fmt.Errorf("create chat for %s: %w", s.StudentID, err)
	}
	return tx.Reader().ChatSession(tx.ctx, s.ID)
}

// AssignChat makes a chat active, answered by assignee.
func (tx *Tx) AssignChat(id, assignee, name string) error {
	_, err := tx.exec(`UPDATE chat_sessions SET status = 'active', assigned_to = ?, assigned_name = ?, activity_at = ?
		WHERE id = ?`, assignee, name, FormatTime(tx.now), id)
	if err != nil {
		return fmt.Errorf("assign chat %s: %w", id, err)
	}
	return nil
}

// AddChatMessage stores m as its chat's next message (seq) and makes it the
// chat's last; preview is what lists show of it.
func (tx *Tx) AddChatMessage(m ChatMessage, preview string) (ChatMessage, error) {
	now := FormatTime(tx.now)
	m.ID, m.CreatedAt = NewID("m_", tx.now), now
	// The writer is one goroutine: reading last_seq and writing it back in
	// one write cannot interleave with another message.
	err := tx.tx.QueryRowContext(tx.ctx, `UPDATE chat_sessions SET last_seq = last_seq + 1, last_message_at = ?,
		activity_at = ?, last_sender_id = ?, last_preview = ? WHERE id = ? RETURNING last_seq`,
		now, now, m.SenderID, preview, m.SessionID).Scan(&m.Seq)
	if err != nil {
		return ChatMessage{}, fmt.Errorf("number message in %s: %w", m.SessionID, err)
	}
	_, err = tx.exec(`INSERT INTO chat_messages (id, session_id, seq, client_msg_id, sender_id, sender_name, sender_role,
		body, attachments, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.SessionID, m.Seq, m.ClientMsgID, m.SenderID, m.SenderName, m.SenderRole, m.Body, m.Attachments, now)
	if err != nil {
		return ChatMessage{}, fmt.Errorf("store message in %s: %w", m.SessionID, err)
	}
	return tx.Reader().ChatMessage(tx.ctx, m.SessionID, m.ID)
}

// MarkChatRead raises a reader's mark in a chat to upTo; it returns the
// mark before (0 when none) and whether it moved.
func (tx *Tx) MarkChatRead(sessionID, userID string, upTo int64) (from int64, moved bool, err error) {
	err = tx.tx.QueryRowContext(tx.ctx, `SELECT coalesce((SELECT up_to_seq FROM chat_reads
		WHERE session_id = ? AND user_id = ?), 0)`, sessionID, userID).Scan(&from)
	if err != nil {
		return 0, false, fmt.Errorf("read mark %s/%s: %w", sessionID, userID, err)
	}
	if upTo <= from {
		return from, false, nil
	}
	_, err = tx.exec(`INSERT INTO chat_reads (session_id, user_id, up_to_seq, read_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (session_id, user_id) DO UPDATE SET up_to_seq = excluded.up_to_seq, read_at = excluded.read_at`,
		sessionID, userID, upTo, FormatTime(tx.now))
	if err != nil {
		return 0, false, fmt.Errorf("mark %s/%s read: %w", sessionID, userID, err)
	}
	return from, true, nil
}

// EndChat ends a chat now.
func (tx *Tx) EndChat(id string) error {
	now := FormatTime(tx.now)
	_, err := tx.exec(`UPDATE chat_sessions SET status = 'ended', ended_at = ?, activity_at = ? WHERE id = ?`, now, now, id)
	if err != nil {
		return fmt.Errorf("end chat %s: %w", id, err)
	}
	return nil
}

// NoteChatTranscript records that the outbox item this write enqueued last
// carries the chat's transcript: the chat is purged only once it is
// delivered. Call it right after Enqueue, in the same write.
func (tx *Tx) NoteChatTranscript(id string) error {
	_, err := tx.exec(`UPDATE chat_sessions SET transcript_outbox_id = last_insert_rowid() WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("note transcript of %s: %w", id, err)
	}
	return nil
}

// PurgeEndedChats deletes chats (their messages and receipts with them)
// that ended, and whose transcript Supabase accepted, before cutoff (or
// that had none to send); it returns them as they were.
func (tx *Tx) PurgeEndedChats(cutoff time.Time, limit int) ([]ChatSession, error) {
	r := tx.Reader()
	gone, err := query(tx.ctx, r.q, scanChatSession, `SELECT `+chatSessionColumns+` FROM chat_sessions s
		WHERE s.status = 'ended' AND s.ended_at < ?1
		  AND (s.transcript_outbox_id IS NULL
		       OR NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = s.transcript_outbox_id) -- delivered, and purged since
		       OR EXISTS (SELECT 1 FROM outbox o WHERE o.id = s.transcript_outbox_id
		                  AND o.delivered_at IS NOT NULL AND o.delivered_at < ?1))
		LIMIT ?2`, FormatTime(cutoff), limit)
	if err != nil {
		return nil, fmt.Errorf("find chats to purge: %w", err)
	}
	for _, s := range gone {
		if _, err := tx.exec(`DELETE FROM chat_sessions WHERE id = ?`, s.ID); err != nil {
			return nil, fmt.Errorf("purge chat %s: %w", s.ID, err)
		}
	}
	return gone, nil
}
