package chat

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"invigil/app/apperr"
	"invigil/app/args"
	"invigil/app/engine"
	"invigil/app/exam"
	"invigil/app/identity"
	"invigil/store"
)

// listSessions is the chats a caller may see, the newest activity first.
// Its audience decides its key:
//   - exam_id given: the exam's rooms for its tutors and admins
//     (chat:exam:<id>:sessions), a student's own rooms in it otherwise;
//   - agents: every support chat (the queue, chat:support:sessions);
//   - admins: everything (chat:sessions), or one scope;
//   - anyone else: the chats they started (chat:user:<id>:sessions).
//
// status filters (waiting, active, ended); limit (default 100, at most
// 500) keeps the newest.
// ListArgs are listSessions' arguments. The argument types are exported
// for app/api's table of the contract: a field tagged omitempty is optional
// for clients.
type ListArgs struct {
	Scope  string `json:"scope,omitempty"`
	Status string `json:"status,omitempty"`
	ExamID string `json:"exam_id,omitempty"`
	Limit  *int   `json:"limit,omitempty"`
}

func (s *Service) listSessions(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a ListArgs
	if err := args.Decode(raw, &a); err != nil {
		return engine.Plan{}, err
	}
	switch a.Scope {
	case "", ScopeSupport, ScopeExam:
	default:
		return engine.Plan{}, apperr.New(apperr.InvalidArgument, `scope must be "support" or "exam"`)
	}
	switch a.Status {
	case "", store.ChatWaiting, store.ChatActive, store.ChatEnded:
	default:
		return engine.Plan{}, apperr.New(apperr.InvalidArgument, "status must be waiting, active or ended")
	}
	limit := DefaultList
	if a.Limit != nil {
		if *a.Limit < 1 || *a.Limit > MaxList {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "limit must be between 1 and %d", MaxList)
		}
		limit = *a.Limit
	}
	u := c.User
	f := store.ChatFilter{Scope: a.Scope, Status: a.Status}
	var key, audience string
	var recheck func(context.Context) error
	switch {
	case a.ExamID != "":
		if err := args.ID("exam_id", a.ExamID); err != nil {
			return engine.Plan{}, err
		}
		if a.Scope == ScopeSupport {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "support chats have no exam_id")
		}
		f.Scope, f.ExamID = ScopeExam, a.ExamID
		see := func(ctx context.Context) (bool, error) {
			ex, err := s.exams.Get(ctx, a.ExamID)
			if err != nil {
				return false, err
			}
			if exam.CanWatch(u, ex) {
				return true, nil
			}
			if u.Role == identity.Student && (ex.StudentIDs == nil || slices.Contains(ex.StudentIDs, u.ID)) {
				return false, nil
			}
			return false, apperr.New(apperr.Forbidden, "exam %q's rooms are for its tutors and students", a.ExamID)
		}
		all, err := see(ctx)
		if err != nil {
			return engine.Plan{}, err
		}
		if all {
			key, audience = examKey(a.ExamID), "exam"
		} else {
			key, audience, f.StudentID = userKey(u.ID), "own:"+u.ID, u.ID
		}
		recheck = func(ctx context.Context) error {
			again, err := see(ctx)
			if err == nil && again != all {
				err = apperr.New(apperr.Conflict, "your rights in exam %q changed: subscribe again", a.ExamID)
			}
			return err
		}
	case u.Role == identity.Agent:
		if a.Scope == ScopeExam {
			return engine.Plan{}, apperr.New(apperr.Forbidden, "agents see support chats, not exam rooms")
		}
		key, audience, f.Scope = supportKey, "support", ScopeSupport
	case u.Role == identity.Admin:
		key, audience = allKey, "all"
		if a.Scope == ScopeSupport {
			key = supportKey
		}
	default:
		key, audience, f.StudentID = userKey(u.ID), "own:"+u.ID, u.ID
	}
	plan := engine.Plan{
		Share: mustJSON([]any{audience, f, limit}),
		List: &engine.List{
			Key: key, Desc: true, Limit: limit, // the newest activity first
			All: func(ctx context.Context) ([]engine.Row, error) {
				ss, err := s.db.ChatSessions(ctx, f, limit+1)
				return sessionRows(ss), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				ss, err := s.db.ChatSessionsByID(ctx, f, ids)
				return sessionRows(ss), err
			},
		},
	}
	if recheck != nil {
		plan.Recheck, plan.RecheckKeys = recheck, []string{exam.Key(a.ExamID)}
	}
	return plan, nil
}

func sessionRows(ss []store.ChatSession) []engine.Row {
	rows := make([]engine.Row, len(ss))
	for i, s := range ss {
		rows[i] = engine.Row{ID: s.ID, Order: s.ActivityAt, Value: sessionView(s)}
	}
	return rows
}

// getMessages is a chat's newest limit messages (default 50, at most 200),
// oldest first; with before (a message id of the chat), those before it.
// MessagesArgs are getMessages' arguments.
type MessagesArgs struct {
	SessionID string `json:"session_id"`
	Limit     *int   `json:"limit,omitempty"`
	Before    string `json:"before,omitempty"`
}

func (s *Service) getMessages(ctx context.Context, c engine.Caller, raw json.RawMessage) (engine.Plan, error) {
	var a MessagesArgs
	if err := decodeSession(raw, &a, &a.SessionID); err != nil {
		return engine.Plan{}, err
	}
	limit := DefaultLimit
	if a.Limit != nil {
		if *a.Limit < 1 || *a.Limit > MaxLimit {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "limit must be between 1 and %d", MaxLimit)
		}
		limit = *a.Limit
	}
	if err := args.Text("before", a.Before, 128); err != nil {
		return engine.Plan{}, err
	}
	u := c.User
	sess, _, err := s.allow(ctx, u, a.SessionID, Read)
	if err != nil {
		return engine.Plan{}, err
	}
	var before int64
	if a.Before != "" {
		m, err := s.db.ChatMessage(ctx, sess.ID, a.Before)
		if errors.Is(err, store.ErrNotFound) {
			return engine.Plan{}, apperr.New(apperr.InvalidArgument, "before: no message %q in this chat", a.Before)
		}
		if err != nil {
			return engine.Plan{}, err
		}
		before = m.Seq
	}
	id := sess.ID
	plan := engine.Plan{
		Share: id + "\x00" + itoa(int64(limit)) + "\x00" + itoa(before),
		List: &engine.List{
			Key: messagesKey(id), Limit: limit, Tail: true, // oldest first, the newest limit kept
			All: func(ctx context.Context) ([]engine.Row, error) {
				ms, err := s.db.ChatMessages(ctx, id, before, limit+1)
				return messageRows(ms), err
			},
			Fetch: func(ctx context.Context, ids []string) ([]engine.Row, error) {
				ms, err := s.db.ChatMessagesByID(ctx, id, before, ids)
				return messageRows(ms), err
			},
		},
	}
	if keys := recheckKeys(sess); len(keys) > 0 {
		plan.RecheckKeys = keys
		plan.Recheck = func(ctx context.Context) error {
			_, _, err := s.allow(ctx, u, id, Read)
			return err
		}
	}
	return plan, nil
}

func messageRows(ms []store.ChatMessage) []engine.Row {
	rows := make([]engine.Row, len(ms))
	for i, m := range ms {
		rows[i] = engine.Row{ID: m.ID, Order: seqOrder(m.Seq), Value: messageView(m)}
	}
	return rows
}
