package chat

import (
	"encoding/json"

	"invigil/store"
)

// The wire types of chat (CONTRACT §4), mapped from the store's rows field
// by field: a new column reaches no client until it is added here.

// SessionView is one chat as listSessions and the functions return it. The
// contract's fields come first; the others help lists: who answers it by
// name, how many messages it has (message_count is the last message's seq),
// the last one's sender and start, and each reader's mark (read_up_to:
// user id → seq), from which a client counts what it has not read.
type SessionView struct {
	ID            string           `json:"_id"`
	Scope         string           `json:"scope"`
	ExamID        *string          `json:"exam_id"`
	StudentID     string           `json:"student_id"`
	StudentName   string           `json:"student_name"`
	AssignedTo    *string          `json:"assigned_to"`
	Status        string           `json:"status"`
	CreatedAt     string           `json:"created_at"`
	LastMessageAt *string          `json:"last_message_at"`
	AssignedName  *string          `json:"assigned_name"`
	EndedAt       *string          `json:"ended_at"`
	MessageCount  int64            `json:"message_count"`
	LastSenderID  *string          `json:"last_sender_id"`
	LastMessage   *string          `json:"last_message"`
	ReadUpTo      map[string]int64 `json:"read_up_to"`
}

// MessageView is one message. seq numbers the chat's messages from 1.
type MessageView struct {
	ID          string          `json:"_id"`
	SessionID   string          `json:"session_id"`
	ClientMsgID string          `json:"client_msg_id"`
	SenderID    string          `json:"sender_id"`
	SenderName  string          `json:"sender_name"`
	SenderRole  string          `json:"sender_role"`
	Body        string          `json:"body"`
	Attachments json.RawMessage `json:"attachments"`
	CreatedAt   string          `json:"created_at"`
	ReadBy      []string        `json:"read_by"`
	Seq         int64           `json:"seq"`
}

// Attachment is a reference to a file stored elsewhere (Supabase Storage).
type Attachment struct {
	URL  string `json:"url"`
	Name string `json:"name"`
	Size int64  `json:"size"`
	MIME string `json:"mime"`
}

// TranscriptRow is one row of Supabase's chat_messages (the archive
// migration's columns, exactly): the message with its chat's scope, exam
// and student, which row-level security places it by.
type TranscriptRow struct {
	ID          string          `json:"id"`
	SessionID   string          `json:"session_id"`
	Scope       string          `json:"scope"`
	ExamID      *string         `json:"exam_id"`
	StudentID   string          `json:"student_id"`
	ClientMsgID string          `json:"client_msg_id"`
	SenderID    string          `json:"sender_id"`
	SenderName  string          `json:"sender_name"`
	SenderRole  string          `json:"sender_role"`
	Body        string          `json:"body"`
	Attachments json.RawMessage `json:"attachments"`
	ReadBy      []string        `json:"read_by"`
	CreatedAt   string          `json:"created_at"`
}

func sessionView(s store.ChatSession) SessionView {
	v := SessionView{
		ID: s.ID, Scope: s.Scope, ExamID: optional(s.ExamID), StudentID: s.StudentID, StudentName: s.StudentName,
		AssignedTo: optional(s.AssignedTo), AssignedName: optional(s.AssignedName), Status: s.Status,
		CreatedAt: s.CreatedAt, LastMessageAt: optional(s.LastMessageAt), EndedAt: optional(s.EndedAt),
		MessageCount: s.LastSeq, LastSenderID: optional(s.LastSenderID), LastMessage: optional(s.LastPreview),
		ReadUpTo: s.Reads,
	}
	if v.ReadUpTo == nil {
		v.ReadUpTo = map[string]int64{}
	}
	return v
}

func messageView(m store.ChatMessage) MessageView {
	readBy := m.ReadBy
	if readBy == nil {
		readBy = []string{}
	}
	return MessageView{
		ID: m.ID, SessionID: m.SessionID, Seq: m.Seq, ClientMsgID: m.ClientMsgID, SenderID: m.SenderID,
		SenderName: m.SenderName, SenderRole: m.SenderRole, Body: m.Body, Attachments: json.RawMessage(m.Attachments),
		CreatedAt: m.CreatedAt, ReadBy: readBy,
	}
}

func transcriptRow(s store.ChatSession, m store.ChatMessage) TranscriptRow {
	readBy := m.ReadBy
	if readBy == nil {
		readBy = []string{}
	}
	return TranscriptRow{
		ID: m.ID, SessionID: s.ID, Scope: s.Scope, ExamID: optional(s.ExamID), StudentID: s.StudentID,
		ClientMsgID: m.ClientMsgID, SenderID: m.SenderID, SenderName: m.SenderName, SenderRole: m.SenderRole,
		Body: m.Body, Attachments: json.RawMessage(m.Attachments), ReadBy: readBy, CreatedAt: m.CreatedAt,
	}
}

// optional is nil for "" (JSON null), else a pointer to s.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
