package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/app/presence"
	"invigil/store"
)

// StartArgs are startChat's arguments. The argument types are exported
// for app/api's table of the contract: a field tagged omitempty is optional
// for clients.
type StartArgs struct {
	Scope  string `json:"scope"`
	ExamID string `json:"exam_id,omitempty"`
}

func (s *Service) startChat(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a StartArgs
	if err := args.Decode(raw, &a); err != nil {
		return nil, err
	}
	switch a.Scope {
	case ScopeSupport:
		if a.ExamID != "" {
			return nil, apperr.New(apperr.InvalidArgument, "a support chat has no exam_id")
		}
		if c.User.Role == identity.Agent || c.User.Role == identity.Admin {
			return nil, apperr.New(apperr.Forbidden, "agents and admins answer support chats; students and tutors start them")
		}
	case ScopeExam:
		if err := args.ID("exam_id", a.ExamID); err != nil {
			return nil, err
		}
		ex, err := s.exams.Get(ctx, a.ExamID)
		if err != nil {
			return nil, err
		}
		if c.User.Role != identity.Student || (ex.StudentIDs != nil && !slices.Contains(ex.StudentIDs, c.User.ID)) {
			return nil, apperr.New(apperr.Forbidden, "exam rooms are started by the exam's students")
		}
		if ex.Status == exam.Closed {
			return nil, apperr.New(apperr.Conflict, "exam %q is closed", a.ExamID)
		}
	default:
		return nil, apperr.New(apperr.InvalidArgument, `scope must be "support" or "exam"`)
	}
	var sess store.ChatSession
	err := s.db.Update(ctx, func(tx *store.Tx) error {
		// One open chat per user and scope: a reload, a second tab or a
		// retry finds the chat already started.
		old, err := tx.Reader().OpenChat(ctx, c.User.ID, a.Scope, a.ExamID)
		if err == nil {
			sess = old
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		sess, err = tx.CreateChat(store.ChatSession{Scope: a.Scope, ExamID: a.ExamID, StudentID: c.User.ID, StudentName: nameOf(c.User)})
		if err != nil {
			return err
		}
		touchChat(tx, sess)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sessionView(sess), nil
}

func nameOf(u identity.User) string {
	if u.Name != "" {
		return u.Name
	}
	return u.ID
}

// SessionArgs are endChat's arguments.
type SessionArgs struct {
	SessionID string `json:"session_id"`
}

func decodeSession(raw json.RawMessage, v any, id *string) error {
	if err := args.Decode(raw, v); err != nil {
		return err
	}
	return args.ID("session_id", *id)
}

// AssignArgs are assignAgent's arguments: without agent_id, the caller
// takes the chat.
type AssignArgs struct {
	SessionID string `json:"session_id"`
	AgentID   string `json:"agent_id,omitempty"`
}

func (s *Service) assignAgent(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a AssignArgs
	if err := decodeSession(raw, &a, &a.SessionID); err != nil {
		return nil, err
	}
	if err := args.Text("agent_id", a.AgentID, 128); err != nil {
		return nil, err
	}
	target, name, action := c.User.ID, nameOf(c.User), Claim
	if a.AgentID != "" && a.AgentID != c.User.ID {
		target, name, action = a.AgentID, "", Assign
	}
	sess, ex, err := s.allow(ctx, c.User, a.SessionID, action)
	if err != nil {
		return nil, err
	}
	if action == Assign && sess.Scope == ScopeExam && (ex == nil || !slices.Contains(ex.TutorIDs, target)) {
		return nil, apperr.New(apperr.InvalidArgument, "%q is not a tutor of exam %q", target, sess.ExamID)
	}
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		// Judged again on the chat as this write sees it: of claims made at
		// once, the first write wins and the others find it claimed.
		cur, err := tx.Reader().ChatSession(ctx, a.SessionID)
		if err != nil {
			return err
		}
		if err := Rule(Relate(c.User, cur, ex), cur, action); err != nil {
			return err
		}
		if cur.Status == store.ChatActive && cur.AssignedTo == target {
			sess = cur
			return nil // already theirs
		}
		if err := tx.AssignChat(cur.ID, target, name); err != nil {
			return err
		}
		touchChat(tx, cur)
		sess, err = tx.Reader().ChatSession(ctx, cur.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("chat assigned", "session_id", sess.ID, "user_id", c.User.ID, "assigned_to", target)
	return sessionView(sess), nil
}

// SendArgs are sendMessage's arguments.
type SendArgs struct {
	SessionID   string       `json:"session_id"`
	Body        string       `json:"body"`
	ClientMsgID string       `json:"client_msg_id"`
	Attachments []Attachment `json:"attachments,omitempty"`
}

func (a *SendArgs) validate() error {
	if err := args.ID("client_msg_id", a.ClientMsgID); err != nil {
		return err
	}
	if err := validBody(a.Body); err != nil {
		return err
	}
	if len(a.Attachments) > MaxAttachments {
		return apperr.New(apperr.InvalidArgument, "at most %d attachments", MaxAttachments)
	}
	for i := range a.Attachments {
		if err := a.Attachments[i].validate(); err != nil {
			return err
		}
	}
	return nil
}

// validBody checks a message body: 1–4000 characters (code points), not
// blank, valid UTF-8, no control characters but tab and line breaks.
func validBody(b string) error {
	if !utf8.ValidString(b) {
		return apperr.New(apperr.InvalidArgument, "body is not valid UTF-8")
	}
	if strings.TrimSpace(b) == "" {
		return apperr.New(apperr.InvalidArgument, "body is required")
	}
	if n := utf8.RuneCountInString(b); n > MaxBody {
		return apperr.New(apperr.InvalidArgument, "body is %d characters; at most %d", n, MaxBody)
	}
	for _, r := range b {
		if (r < 0x20 && r != '\n' && r != '\t' && r != '\r') || r == 0x7f {
			return apperr.New(apperr.InvalidArgument, "body has control characters")
		}
	}
	return nil
}

// validate checks an attachment reference: an https URL, a name, a size
// and a media type.
func (at *Attachment) validate() error {
	u, err := url.Parse(at.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || len(at.URL) > 2048 || u.User != nil {
		return apperr.New(apperr.InvalidArgument, "attachment url must be an https URL (at most 2048 bytes)")
	}
	if strings.TrimSpace(at.Name) == "" || utf8.RuneCountInString(at.Name) > 255 {
		return apperr.New(apperr.InvalidArgument, "attachment name is required (at most 255 characters)")
	}
	if err := args.Text("attachment name", at.Name, 1024); err != nil {
		return err
	}
	if at.Size < 0 || at.Size > 1<<40 {
		return apperr.New(apperr.InvalidArgument, "attachment size must be between 0 and 2^40 bytes")
	}
	if len(at.MIME) > 255 {
		return apperr.New(apperr.InvalidArgument, "attachment mime is at most 255 bytes")
	}
	if typ, _, err := mime.ParseMediaType(at.MIME); err != nil || !strings.Contains(typ, "/") {
		return apperr.New(apperr.InvalidArgument, "attachment mime must be a media type such as image/png")
	}
	return nil
}

func (s *Service) sendMessage(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a SendArgs
	if err := decodeSession(raw, &a, &a.SessionID); err != nil {
		return nil, err
	}
	if err := a.validate(); err != nil {
		return nil, err
	}
	sess, ex, err := s.allow(ctx, c.User, a.SessionID, Read)
	if err != nil {
		return nil, err
	}
	// A retry of a message already stored (its answer was lost) gets that
	// message, spending no token: it must succeed whatever happened since.
	if m, err := sentBefore(ctx, s.db, nil, c.User.ID, a); err == nil || !errors.Is(err, store.ErrNotFound) {
		if err != nil {
			return nil, err
		}
		return messageView(m), nil
	}
	if err := Rule(Relate(c.User, sess, ex), sess, Write); err != nil {
		return nil, err
	}
	if wait := s.limits.Take(c.User.ID); wait > 0 {
		return nil, &apperr.Error{Code: apperr.RateLimited, RetryAfterMs: wait.Milliseconds() + 1,
			Message: fmt.Sprintf("at most %g messages at once, then %g a second", s.cfg.MessageBurst, s.cfg.MessageRate)}
	}
	attachments := "[]"
	if len(a.Attachments) > 0 {
		attachments = mustJSON(a.Attachments)
	}
	var m store.ChatMessage
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		r := tx.Reader()
		if old, err := sentBefore(ctx, s.db, r, c.User.ID, a); err == nil || !errors.Is(err, store.ErrNotFound) {
			m = old // the same message, sent twice at once
			return err
		}
		cur, err := r.ChatSession(ctx, a.SessionID)
		if err != nil {
			return err
		}
		rel := Relate(c.User, cur, ex)
		if err := Rule(rel, cur, Write); err != nil {
			return err
		}
		if cur.Status == store.ChatWaiting && !rel.Owner && (rel.Staff || rel.Admin) {
			// A tutor's first answer to a waiting exam room claims it.
			if err := tx.AssignChat(cur.ID, c.User.ID, nameOf(c.User)); err != nil {
				return err
			}
		}
		m, err = tx.AddChatMessage(store.ChatMessage{
			SessionID: cur.ID, ClientMsgID: a.ClientMsgID, SenderID: c.User.ID, SenderName: nameOf(c.User),
			SenderRole: string(c.User.Role), Body: a.Body, Attachments: attachments,
		}, preview(a.Body))
		if err != nil {
			return err
		}
		tx.TouchRows(messagesKey(cur.ID), m.ID)
		// The sender has seen what came before their message.
		if _, err := markRead(ctx, tx, cur.ID, c.User.ID, m.Seq-1); err != nil {
			return err
		}
		touchChat(tx, cur)
		return presence.ClearTyping(tx, presence.ChatScope(cur.ID), c.User.ID)
	})
	if err != nil {
		return nil, err
	}
	return messageView(m), nil
}

// sentBefore finds the message sender already sent under this
// client_msg_id, read through r (nil: a read of its own).
func sentBefore(ctx context.Context, db *store.DB, r *store.Reader, sender string, a SendArgs) (store.ChatMessage, error) {
	if r != nil {
		return r.ChatMessageByClientID(ctx, a.SessionID, sender, a.ClientMsgID)
	}
	var m store.ChatMessage
	err := db.Read(ctx, func(r *store.Reader) (err error) {
		m, err = r.ChatMessageByClientID(ctx, a.SessionID, sender, a.ClientMsgID)
		return err
	})
	return m, err
}

// markRead raises userID's mark in a chat to upTo and names the messages
// whose read_by that changes; it reports whether the mark moved.
func markRead(ctx context.Context, tx *store.Tx, sessionID, userID string, upTo int64) (bool, error) {
	if upTo <= 0 {
		return false, nil
	}
	from, moved, err := tx.MarkChatRead(sessionID, userID, upTo)
	if err != nil || !moved {
		return false, err
	}
	ids, err := tx.Reader().ChatMessageIDs(ctx, sessionID, from, upTo, userID)
	if len(ids) > 0 {
		tx.TouchRows(messagesKey(sessionID), ids...)
	}
	return true, err
}

// Receipt is what markRead returns.
type Receipt struct {
	SessionID     string `json:"session_id"`
	UpToMessageID string `json:"up_to_message_id"`
	UpToSeq       int64  `json:"up_to_seq"`
}

// ReadArgs are markRead's arguments.
type ReadArgs struct {
	SessionID     string `json:"session_id"`
	UpToMessageID string `json:"up_to_message_id"`
}

func (s *Service) markRead(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a ReadArgs
	if err := decodeSession(raw, &a, &a.SessionID); err != nil {
		return nil, err
	}
	if err := args.ID("up_to_message_id", a.UpToMessageID); err != nil {
		return nil, err
	}
	sess, ex, err := s.allow(ctx, c.User, a.SessionID, Write)
	if err != nil {
		return nil, err
	}
	var seq int64
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		r := tx.Reader()
		m, err := r.ChatMessage(ctx, sess.ID, a.UpToMessageID)
		if errors.Is(err, store.ErrNotFound) {
			return apperr.New(apperr.NotFound, "no message %q in this chat", a.UpToMessageID)
		}
		if err != nil {
			return err
		}
		cur, err := r.ChatSession(ctx, sess.ID)
		if err != nil {
			return err
		}
		if err := Rule(Relate(c.User, cur, ex), cur, Write); err != nil {
			return err
		}
		seq = m.Seq
		moved, err := markRead(ctx, tx, cur.ID, c.User.ID, m.Seq)
		if moved {
			touchChat(tx, cur) // read_up_to is part of the chat's row
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return Receipt{SessionID: sess.ID, UpToMessageID: a.UpToMessageID, UpToSeq: seq}, nil
}

// TypingArgs are setTyping's arguments (typing is required).
type TypingArgs struct {
	SessionID string `json:"session_id"`
	Typing    *bool  `json:"typing"`
}

// TypingResult is what setTyping returns.
type TypingResult struct {
	SessionID string `json:"session_id"`
	Typing    bool   `json:"typing"`
}

func (s *Service) setTyping(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a TypingArgs
	if err := decodeSession(raw, &a, &a.SessionID); err != nil {
		return nil, err
	}
	if a.Typing == nil {
		return nil, apperr.New(apperr.InvalidArgument, "typing (true or false) is required")
	}
	sess, _, err := s.allow(ctx, c.User, a.SessionID, Write)
	if err != nil {
		return nil, err
	}
	if err := s.presence.Typing(ctx, c, presence.ChatScope(sess.ID), *a.Typing); err != nil {
		return nil, err
	}
	return TypingResult{SessionID: sess.ID, Typing: *a.Typing}, nil
}

func (s *Service) endChat(ctx context.Context, c engine.Caller, raw json.RawMessage) (any, error) {
	var a SessionArgs
	if err := decodeSession(raw, &a, &a.SessionID); err != nil {
		return nil, err
	}
	sess, ex, err := s.allow(ctx, c.User, a.SessionID, End)
	if err != nil {
		return nil, err
	}
	rows := 0
	err = s.db.Update(ctx, func(tx *store.Tx) error {
		r := tx.Reader()
		cur, err := r.ChatSession(ctx, sess.ID)
		if err != nil {
			return err
		}
		if err := Rule(Relate(c.User, cur, ex), cur, End); err != nil {
			return err
		}
		if cur.Status == store.ChatEnded {
			sess = cur
			return nil // ended already: its transcript is on its way
		}
		if err := tx.EndChat(cur.ID); err != nil {
			return err
		}
		if sess, err = r.ChatSession(ctx, cur.ID); err != nil {
			return err
		}
		touchChat(tx, cur)
		rows, err = enqueueTranscript(ctx, tx, sess)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("chat ended", "session_id", sess.ID, "user_id", c.User.ID, "transcript_rows", rows)
	return sessionView(sess), nil
}

// enqueueTranscript puts the chat's messages in the outbox, in the write
// that ended it: the transcript reaches Supabase (chat_messages, upserted
// on id) even if the process dies right after. A chat without messages
// sends nothing.
func enqueueTranscript(ctx context.Context, tx *store.Tx, sess store.ChatSession) (int, error) {
	msgs, err := tx.Reader().ChatTranscript(ctx, sess.ID)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	rows := make([]TranscriptRow, len(msgs))
	for i, m := range msgs {
		rows[i] = transcriptRow(sess, m)
	}
	if err := tx.Enqueue("chat_messages", "id", mustJSON(rows)); err != nil {
		return 0, err
	}
	return len(rows), tx.NoteChatTranscript(sess.ID)
}
